"""EAGER_PROFILE_STEPS: a window of training steps profiled, written as a table beside the run's log."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from eager.decoding.trie import CodeTrie
from eager.model.code_tokens import add_code_tokens
from eager.train.profiling import PROFILE_ENV, profile_window
from eager.train.samples import build_samples
from eager.train.trainer import train_stage
from tests.tiny import TEST_RECIPE, load_tiny, toy_index


def test_the_window_parses_or_says_what_it_wants():
    assert profile_window("10:14") == (10, 14) and profile_window("7") == (7, 7)
    assert profile_window(None) is None and profile_window(" ") is None
    for bad in ("0:3", "5:2", "a:b", "1:2:3", "-1"):
        with pytest.raises(ValueError, match=f"{PROFILE_ENV}=.*FIRST:LAST"):
            profile_window(bad)


@pytest.mark.parametrize("window, expected", [(None, None), ("2:3", "steps 2-3 (2) of 2-3 asked"),
                                              ("4:99", "steps 4-5 (2) of 4-99 asked")])
def test_a_stage_profiles_the_steps_asked(cyclic_data, base_dir, tmp_path, monkeypatch, window, expected):
    if window is None:
        monkeypatch.delenv(PROFILE_ENV, raising=False)
    else:
        monkeypatch.setenv(PROFILE_ENV, window)
    index = toy_index(cyclic_data)
    model, tok = load_tiny(base_dir)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    samples = build_samples(cyclic_data, index, ("seqrec",))
    stage = replace(TEST_RECIPE.stage2, epochs=1, max_steps=5, batch_size=8)
    recipe = replace(TEST_RECIPE, eval_users=4, eval_beams=4)
    _, _, _, info = train_stage("stage2", model, tok, index, trie, cyclic_data, samples, stage, recipe, None, tmp_path,
                                lambda r: None, progress=False)
    assert info["history"][-1]["step"] == 5  # profiling changed nothing about the run
    report = tmp_path / "profile_stage2.txt"
    if expected is None:
        assert not report.exists()
        return
    text = report.read_text()
    header = text.splitlines()[0]
    assert header.startswith(expected) and "sorted by self_cpu_time_total" in header
    assert float(re.search(r"([\d.]+) s a step", header).group(1)) > 0
    assert "aten::mm" in text or "aten::addmm" in text  # the operators, not an empty table


def test_a_bad_window_stops_the_stage_before_it_trains(cyclic_data, base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(PROFILE_ENV, "5:2")
    index = toy_index(cyclic_data)
    model, tok = load_tiny(base_dir)
    trie = CodeTrie(index, add_code_tokens(model, tok, index, "mean", cyclic_data))
    with pytest.raises(ValueError, match="FIRST:LAST"):
        train_stage("stage2", model, tok, index, trie, cyclic_data, build_samples(cyclic_data, index, ("seqrec",)),
                    replace(TEST_RECIPE.stage2, max_steps=2), TEST_RECIPE, None, tmp_path, lambda r: None,
                    progress=False)
    assert not (tmp_path / "stage2_state.pt").exists()
