"""Recipes are frozen, named constants: each shipped checkpoint names one that reproduces it."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from eager.model.variants import get_variant
from eager.train.recipes import RECIPES, RENAMED, get_recipe, with_gct

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "checkpoints").glob("*/*/config.json"))


@pytest.mark.parametrize("config_path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_a_shipped_checkpoint_names_the_recipe_that_trains_it(config_path):
    config = json.loads(config_path.read_text())
    recorded = config["recipe"]
    assert recorded["name"] in RECIPES, f"{config_path}: {recorded['name']!r} is not a recipe `eager train` knows"
    variant = get_variant(config["variant"]["name"].split(".")[0])
    expected = json.loads(json.dumps(asdict(with_gct(get_recipe(recorded["name"]), variant))))
    # The seeds are the run's own (`--train-seed`); everything else is the recipe's.
    for field in ("seed", "train_seed"):
        expected[field] = recorded[field]
    assert recorded == expected


def test_every_recipe_constant_says_where_it_came_from():
    tree = ast.parse((ROOT / "eager" / "train" / "recipes.py").read_text())
    body = tree.body
    named = []
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_RECIPE") for t in node.targets):
            named.append(node.targets[0].id)
            assert isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                and isinstance(after.value.value, str) and after.value.value.strip(), f"{node.targets[0].id} has no docstring"
    assert len(named) == len(RECIPES)


def test_recipe_names_say_what_they_are_and_old_names_still_resolve():
    for name in RECIPES:
        assert not re.search(r"\b(cpu|gpu|lease|h100|h200)\b", name), name
    for old, new in RENAMED.items():
        assert get_recipe(old) is RECIPES[new]
    with pytest.raises(KeyError, match="choose one of"):
        get_recipe("no-such-recipe")


def test_code_comments_name_no_issue_or_session():
    offenders = []
    for path in (ROOT / "eager").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\bissue #\d+|\bsession\b", line, re.IGNORECASE) and "#" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
