"""Recipe search: named and ad-hoc trials, dotted changes, and a real two-trial search on a tiny model."""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.lab.compare import compare_evaluations
from eager.lab.search import (
    LEASE_TRIALS,
    Trial,
    apply_changes,
    parse_trial,
    run_search,
    trial_evaluation,
    trial_recipe,
)
from eager.model.variants import get_variant
from eager.train.recipes import MULTITASK_SHORT_RECIPE
from tests.conftest import make_cyclic_data
from tests.tiny import TEST_RECIPE, load_tiny, toy_embeddings, toy_index


@settings(max_examples=30, deadline=None)
@given(lr=st.floats(1e-6, 1e-1), dropout=st.floats(0.0, 0.5), steps=st.integers(1, 10_000))
def test_changes_reach_exactly_the_named_fields(lr, dropout, steps):
    changed = apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.lr", lr), ("stage1.lora.dropout", dropout),
                                               ("stage1.max_steps", steps)))
    assert (changed.stage1.lr, changed.stage1.lora.dropout, changed.stage1.max_steps) == (lr, dropout, steps)
    assert changed.stage2 == MULTITASK_SHORT_RECIPE.stage2 and changed.gct == MULTITASK_SHORT_RECIPE.gct
    assert replace(changed, stage1=MULTITASK_SHORT_RECIPE.stage1) == MULTITASK_SHORT_RECIPE


def test_trials_parse_by_name_or_spec_and_bad_ones_say_why():
    assert parse_trial("lr-2e-3") is LEASE_TRIALS["lr-2e-3"]
    trial = parse_trial("mix:stage1.tasks=('seqrec','index2item'),token_init=mean,stage1.lr=3e-4")
    assert trial == Trial("mix", (("stage1.tasks", ("seqrec", "index2item")), ("token_init", "mean"),
                                  ("stage1.lr", 3e-4)))
    assert apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.tasks", ["seqrec"]),)).stage1.tasks == ("seqrec",)
    for named in LEASE_TRIALS.values():  # every shipped trial names real fields
        apply_changes(MULTITASK_SHORT_RECIPE, named.changes)
    with pytest.raises(ValueError, match="unknown trial 'nope'"):
        parse_trial("nope")
    with pytest.raises(ValueError, match="has no 'lrate'.*lr"):
        apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.lrate", 1e-3),))
    with pytest.raises(ValueError, match="is a group"):
        apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.lora", 4),))
    with pytest.raises(ValueError, match="'stage1.lr' takes a float.*not \"5e-3'\""):
        apply_changes(MULTITASK_SHORT_RECIPE, parse_trial("x:stage1.lr=5e-3'").changes)  # a stray shell quote
    assert apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.lr", 1),)).stage1.lr == 1.0
    assert apply_changes(MULTITASK_SHORT_RECIPE, (("stage1.max_steps", 50),)).stage1.max_steps == 50  # None is open
    with pytest.raises(ValueError, match="takes a bool"):
        apply_changes(MULTITASK_SHORT_RECIPE, (("compile", 1),))
    with pytest.raises(ValueError, match="not field.path=value"):
        parse_trial("x:stage1.lr")


def test_a_search_step_count_is_exact_unless_a_trial_sets_its_own():
    assert MULTITASK_SHORT_RECIPE.stage1.max_minutes  # the lease recipe's stage 1 runs on a clock
    plain = trial_recipe(MULTITASK_SHORT_RECIPE, Trial("base"), max_steps=300)
    assert (plain.name, plain.stage1.max_steps, plain.stage1.max_minutes) == ("multitask-short+base", 300, None)
    assert plain.stage2 == MULTITASK_SHORT_RECIPE.stage2  # a search trains stage 1 only
    own = trial_recipe(MULTITASK_SHORT_RECIPE, Trial("own", (("stage1.max_steps", 50),)), max_steps=300)
    assert (own.stage1.max_steps, own.stage1.max_minutes) == (50, MULTITASK_SHORT_RECIPE.stage1.max_minutes)
    clocked = trial_recipe(MULTITASK_SHORT_RECIPE, Trial("clocked", (("stage1.max_minutes", 2.0),)), max_steps=300)
    assert (clocked.stage1.max_steps, clocked.stage1.max_minutes) == (300, 2.0)
    assert trial_recipe(MULTITASK_SHORT_RECIPE, Trial("open")).stage1 == MULTITASK_SHORT_RECIPE.stage1  # no --max-steps: as named


def test_search_trains_each_trial_and_ranks_them(cyclic_data, base_dir, tmp_path):
    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6)
    trials = [Trial("base"), Trial("fast", (("stage1.lr", 5e-2),)), Trial("broken", (("token_init", "nonsense"),)),
              Trial("fewer-users", (("eval_users", 6),))]
    results = run_search(cyclic_data, get_variant("full"), recipe, trials, tmp_path / "search",
                         tmp_path / "artifacts", base=str(base_dir), max_steps=3, progress=False,
                         load_model=lambda: load_tiny(base_dir), index=toy_index(cyclic_data),
                         tables=toy_embeddings(cyclic_data))
    by_name = {r["trial"]: r for r in results}
    assert set(by_name) == {"base", "fast", "broken", "fewer-users"}
    assert "unknown token init" in by_name["broken"]["error"]  # recorded; the other trials still ran
    assert results[-1]["trial"] == "broken"  # ranked last
    scored = [r for r in results if "error" not in r]
    assert [r["valid_ndcg@10"] for r in scored] == sorted((r["valid_ndcg@10"] for r in scored), reverse=True)
    for name in ("base", "fast"):
        assert by_name[name]["steps"] == 3 and by_name[name]["tokens"] > 0
        config = json.loads((tmp_path / "search" / name / "config.json").read_text())
        assert config["recipe"]["name"] == f"{recipe.name}+{name}" and config["variant"]["name"] == "full.stage1"
        assert not config["variant"]["use_aat"]
        assert config["recipe"]["stage1"]["max_steps"] == 3
    assert json.loads((tmp_path / "search" / "fast" / "config.json").read_text())["recipe"]["stage1"]["lr"] == 5e-2
    assert by_name["base"]["loss_lm"] != by_name["fast"]["loss_lm"]  # a different lr trained differently
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert [t["trial"] for t in record["trials"]] == [r["trial"] for r in results]
    table = (tmp_path / "search" / "search.md").read_text()
    assert "| fast | stage1.lr=0.05 | 3 |" in table and "failed: ValueError" in table
    # The floor: popularity on the same validation users, computed here by hand.
    from eager.train.validation import selection_cases

    cases = selection_cases(cyclic_data, recipe)
    counts = {}
    for seq in cyclic_data.sequences:
        for item in seq[:-2]:  # the train part of each sequence
            counts[item] = counts.get(item, 0) + 1
    top10 = sorted(counts, key=lambda i: (-counts[i], i))[:10]
    hits = sum(c.target in top10 for c in cases)
    assert record["popularity"]["users"] == len(cases) == by_name["base"]["valid_users"] == 8
    assert record["popularity"]["recall@10"] == pytest.approx(hits / len(cases))
    assert "*popularity, same 8 users*" in table
    # Each trial's per-user ranks, and the paired comparison with the first trial that trained.
    ranks = json.loads((tmp_path / "search" / "valid_ranks.json").read_text())
    assert set(ranks) == {"base", "fast", "fewer-users"} and record["reference"] == "base"
    assert list(ranks["base"]) == [cyclic_data.user_keys[c.user] for c in cases]
    for name in ("base", "fast"):
        hit = [r is not None and r <= 10 for r in ranks[name].values()]
        assert sum(hit) / len(hit) == by_name[name]["valid_recall@10"]
    assert by_name["base"]["vs_reference"] is None
    paired = by_name["fast"]["vs_reference"]
    assert paired["trial"] == "base" and paired["users"] == 8
    for metric in ("recall@10", "ndcg@10"):
        assert paired[metric]["difference"] == pytest.approx(by_name["fast"][f"valid_{metric}"]
                                                             - by_name["base"][f"valid_{metric}"])
        assert paired[metric]["ci_low"] <= paired[metric]["difference"] <= paired[metric]["ci_high"]
    assert "not the same users" in by_name["fewer-users"]["vs_reference"]["error"]  # 6 users against 8
    assert "| reference |" in table and "not paired: other users" in table


def test_a_user_subset_trains_and_validates_on_those_users(cyclic_data, base_dir, tmp_path):
    from eager.lab.search import popularity_on_selection
    from eager.train.samples import build_samples
    from eager.train.validation import selection_cases, training_users

    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6)
    # Fewer trained users than validation users: selection must stop at the trained ones.
    subset = apply_changes(recipe, (("max_users", 6),))
    users = training_users(cyclic_data, subset)
    assert len(users) == 6 and training_users(cyclic_data, recipe) is None
    assert training_users(cyclic_data, subset) == users  # seeded: every stage and process agrees
    cases = selection_cases(cyclic_data, subset)
    assert sorted(c.user for c in cases) == users
    assert not {c.user for c in selection_cases(cyclic_data, recipe)} <= set(users)  # all users: others too
    with pytest.raises(ValueError, match="max_users must be a positive"):
        replace(recipe, max_users=0)

    index = toy_index(cyclic_data)
    run_search(cyclic_data, get_variant("full"), recipe, [Trial("few", (("max_users", 6),))], tmp_path / "search",
               tmp_path / "artifacts", base=str(base_dir), max_steps=2, progress=False,
               load_model=lambda: load_tiny(base_dir), index=index, tables=toy_embeddings(cyclic_data))
    config = json.loads((tmp_path / "search" / "few" / "config.json").read_text())
    assert config["max_users"] == config["recipe"]["max_users"] == 6
    count = lambda who: len(build_samples(cyclic_data, index, recipe.stage1.tasks, recipe.max_history,  # noqa: E731
                                          recipe.seed, who, recipe.prompt_style))
    assert config["stages"][0]["samples"] == count(users) < count(None)
    ranks = json.loads((tmp_path / "search" / "valid_ranks.json").read_text())["few"]
    assert list(ranks) == [cyclic_data.user_keys[c.user] for c in cases]
    # The floor is popularity on those same trained users, not on the base recipe's validation users.
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert record["popularity"] == popularity_on_selection(cyclic_data, subset) != popularity_on_selection(
        cyclic_data, recipe)
    assert record["popularity"]["users"] == len(cases) == 6


def test_cli_names_a_bad_trial_before_loading_anything(tmp_path):
    from eager.cli import main

    with pytest.raises(SystemExit, match="unknown trial 'nope'.*lr-2e-3"):
        main(["lab", "search", "--dataset", "beauty", "--trial", "base", "--trial", "nope",
              "--data-root", str(tmp_path / "no-data")])


def test_train_and_search_help_name_every_recipe():
    from eager.cli import build_parser
    from eager.train.recipes import RECIPES

    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices
    lab = stages["lab"]._subparsers._group_actions[0].choices
    for command, sub in (("train", stages["train"]), ("search", lab["search"])):
        recipe_help = next(a.help for a in sub._actions if "--recipe" in a.option_strings)
        assert all(name in recipe_help for name in RECIPES), (command, recipe_help)


def test_a_train_seed_changes_training_but_not_the_users(cyclic_data, base_dir, tmp_path):
    """A second seed is paired with the first: same trained and validated users, other weights."""
    from safetensors.torch import load_file

    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6, max_users=10)
    assert recipe.training_seed == recipe.seed and replace(recipe, train_seed=7).training_seed == 7
    trials = [Trial("base"), Trial("same", (("train_seed", recipe.seed),)), Trial("seed7", (("train_seed", 7),))]
    results = run_search(cyclic_data, get_variant("full"), recipe, trials, tmp_path / "search",
                         tmp_path / "artifacts", base=str(base_dir), max_steps=3, progress=False,
                         load_model=lambda: load_tiny(base_dir), index=toy_index(cyclic_data),
                         tables=toy_embeddings(cyclic_data))
    by_name = {r["trial"]: r for r in results}
    ranks = json.loads((tmp_path / "search" / "valid_ranks.json").read_text())
    assert list(ranks["seed7"]) == list(ranks["base"])  # the same validation users, in the same order
    assert "error" not in by_name["seed7"]["vs_reference"]  # so the two pair user by user

    def weights(trial: str) -> dict:
        files = sorted((tmp_path / "search" / trial).glob("*.safetensors"))
        assert files, f"no weights in {trial}"
        return {f"{f.name}/{k}": v for f in files for k, v in load_file(f).items()}

    def samples(trial: str) -> int:
        return json.loads((tmp_path / "search" / trial / "config.json").read_text())["stages"][0]["samples"]

    base, same, seed7 = weights("base"), weights("same"), weights("seed7")
    assert samples("seed7") == samples("base")  # the same 10 trained users
    assert all((base[k] == same[k]).all() for k in base)  # train_seed = seed is the default run, exactly
    assert any(not (base[k] == seed7[k]).all() for k in base)  # another seed trains otherwise


@pytest.mark.parametrize("name, cap", [("history-5", 5), ("history-10", 10)])
def test_the_history_trials_cap_training_and_selection_prompts(name, cap):
    from eager.index.item_index import code_token
    from eager.train.pipeline import stage_samples
    from eager.train.validation import selection_cases
    from tests.conftest import make_cyclic_data

    data = make_cyclic_data(length=16)  # train sequences of 14: prefixes up to 13 items
    index = toy_index(data)
    capped = apply_changes(TEST_RECIPE, LEASE_TRIALS[name].changes)

    def items_per_prompt(recipe):  # one first-level code token per history item
        first = code_token(0, 0)[:3]
        return [s.prompt.count(first) for s in stage_samples(data, index, recipe, "stage1") if s.task == "seqrec"]

    full, short = items_per_prompt(TEST_RECIPE), items_per_prompt(capped)
    assert len(short) == len(full) and max(short) == cap < max(full) == 13
    with pytest.raises(ValueError, match="max_history is how many history items"):
        apply_changes(TEST_RECIPE, (("max_history", 0),))
    # Model selection reads what the model trained on (the uncapped recipe: all 14 before a validation target).
    assert {len(c.history) for c in selection_cases(data, capped)} == {cap}
    assert {len(c.history) for c in selection_cases(data, TEST_RECIPE)} == {14}


def test_seeds_train_every_trial_once_each_and_pool_them(cyclic_data, base_dir, tmp_path):
    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6, max_users=10)
    trials = [Trial("base"), Trial("fast", (("stage1.lr", 5e-2),))]
    results = run_search(cyclic_data, get_variant("full"), recipe, trials, tmp_path / "search",
                         tmp_path / "artifacts", base=str(base_dir), max_steps=3, progress=False,
                         load_model=lambda: load_tiny(base_dir), index=toy_index(cyclic_data),
                         tables=toy_embeddings(cyclic_data), seeds=[42, 7])
    by_name = {r["trial"]: r for r in results}
    assert set(by_name) == {"base-seed42", "base-seed7", "fast-seed42", "fast-seed7"}
    for name, row in by_name.items():
        config = json.loads((tmp_path / "search" / name / "config.json").read_text())
        assert config["recipe"]["train_seed"] == row["train_seed"] == int(name.rsplit("seed", 1)[1])
        assert row["seed_of"] == name.split("-seed")[0]
    assert by_name["base-seed7"]["loss_lm"] != by_name["base-seed42"]["loss_lm"]  # the seed trains otherwise
    # Each seeded run pairs with the reference trial's run of the same seed.
    assert by_name["fast-seed7"]["vs_reference"]["trial"] == "base-seed7"
    assert by_name["fast-seed42"]["vs_reference"]["trial"] == "base-seed42"
    assert by_name["base-seed7"]["vs_reference"]["trial"] == "base-seed42"  # the noise floor: seed against seed
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert record["seeds"] == [42, 7]
    pooled = {p["trial"]: p for p in record["pooled"]}
    assert set(pooled) == {"base", "fast"} and pooled["base"]["vs_reference"] is None
    fast = pooled["fast"]
    assert sorted(fast["seeds"]) == [7, 42] and by_name["base-seed42"]["vs_reference"] is None
    for metric in ("recall@10", "ndcg@10"):
        mean = lambda trial: (by_name[f"{trial}-seed42"][f"valid_{metric}"]  # noqa: E731
                              + by_name[f"{trial}-seed7"][f"valid_{metric}"]) / 2
        assert fast[f"valid_{metric}"] == pytest.approx(mean("fast"))
        paired = fast["vs_reference"][metric]
        # Seeds averaged per user, then paired: the difference of the two seeds' means.
        assert paired["difference"] == pytest.approx(mean("fast") - mean("base"))
        assert paired["runs_ci_low"] <= paired["runs_ci_high"]
    assert "runs_ci_low" not in by_name["fast-seed7"]["vs_reference"]["ndcg@10"]  # one run a side
    # Read back from the folder (as `eager lab compare DIR:TRIAL` does for seeds searched apart), the
    # trials pool to the search's own numbers: the users and targets rebuild from the checkpoints.
    read = {name: trial_evaluation(tmp_path / "search", name, cyclic_data) for name in by_name}
    assert read["fast-seed7"].ranks == json.loads((tmp_path / "search" / "valid_ranks.json").read_text())["fast-seed7"]
    rebuilt = compare_evaluations([read["base-seed42"], read["base-seed7"]], [read["fast-seed42"], read["fast-seed7"]],
                                  ("recall@10", "ndcg@10"))
    for row in rebuilt["metrics"]:
        own = fast["vs_reference"][row["metric"]]
        assert (row["difference"], row["ci_low"], row["ci_high"]) == pytest.approx(
            (own["difference"], own["ci_low"], own["ci_high"]))
    with pytest.raises(ValueError, match="has no scored trial 'fast'; it has base-seed42"):
        trial_evaluation(tmp_path / "search", "fast", cyclic_data)  # the family, not a run of it
    with pytest.raises(ValueError, match="holds ranks for 8 users, but its recipe selects 8 others"):
        trial_evaluation(tmp_path / "search", "fast-seed7", make_cyclic_data(num_users=30))  # other users drawn
    table = (tmp_path / "search" / "search.md").read_text()
    assert "Pooled over training seeds 42, 7" in table and "| fast | 42, 7 |" in table.split("Pooled")[1]
    fast7 = next(line for line in table.splitlines() if line.startswith("| fast-seed7 |"))
    assert fast7.split(" | ")[5].endswith("vs base-seed7")  # the header names seed 42's run: the cell says otherwise
    with pytest.raises(ValueError, match="sets train_seed itself"):
        run_search(cyclic_data, get_variant("full"), recipe, [Trial("s", (("train_seed", 3),))], tmp_path / "x",
                   seeds=[1, 2], load_model=lambda: pytest.fail("loaded before refusing"))


def test_cli_refuses_bad_seeds_before_loading_anything(tmp_path):
    from eager.cli import main

    for seeds, message in (("42,x", "comma-separated whole numbers"), ("7,7", "repeat one")):
        with pytest.raises(SystemExit, match=message):
            main(["lab", "search", "--dataset", "beauty", "--trial", "base", "--seeds", seeds,
                  "--data-root", str(tmp_path / "no-data")])
    with pytest.raises(SystemExit, match="sets train_seed itself"):
        main(["lab", "search", "--dataset", "beauty", "--trial", "s:train_seed=3", "--seeds", "1,2",
              "--data-root", str(tmp_path / "no-data")])


def test_an_aat_trial_trains_the_adapter_and_scores_its_stage_1_beside_it(cyclic_data, base_dir, tmp_path):
    """The adapter's control as one search: stage 1 + AAT, its stage 1 alone, and stage 1 as long as both."""
    assert parse_trial("a:aat=1,stage2.max_steps=2") == Trial("a", (("stage2.max_steps", 2),), aat=True)
    assert parse_trial("a:aat=0").aat is False
    with pytest.raises(ValueError, match="aat=2 takes 1"):
        parse_trial("a:aat=2")
    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6)
    trials = [Trial("aat", (("stage2.max_steps", 2),), aat=True), Trial("longer", (("stage1.max_steps", 5),))]
    results = run_search(cyclic_data, get_variant("full"), recipe, trials, tmp_path / "search",
                         tmp_path / "artifacts", base=str(base_dir), max_steps=3, progress=False,
                         load_model=lambda: load_tiny(base_dir), index=toy_index(cyclic_data),
                         tables=toy_embeddings(cyclic_data))
    by_name = {r["trial"]: r for r in results}
    assert set(by_name) == {"aat", "aat.stage1", "longer"}
    aat, stage1, longer = by_name["aat"], by_name["aat.stage1"], by_name["longer"]
    assert aat["stage_steps"] == {"stage1": 3, "stage2": 2} and aat["steps"] == 5 == longer["steps"]
    assert stage1["steps"] == 3 and stage1["stage1_of"] == "aat" and 0 < stage1["tokens"] < aat["tokens"]
    config = json.loads((tmp_path / "search" / "aat" / "config.json").read_text())
    assert config["variant"]["name"] == "full" and config["variant"]["use_aat"]
    assert [s["name"] for s in config["stages"]] == ["stage1", "stage2"]
    assert not json.loads((tmp_path / "search" / "longer" / "config.json").read_text())["variant"]["use_aat"]
    # Each score is its stage's own validation, as the checkpoint's training log recorded it.
    history = json.loads((tmp_path / "search" / "aat" / "metrics.json").read_text())["history"]
    for row, stage in ((aat, "stage2"), (stage1, "stage1")):
        logged = [r for r in history if r["stage"] == stage][-1]
        assert (row["valid_recall@10"], row["valid_ndcg@10"]) == (logged["valid_recall@10"], logged["valid_ndcg@10"])
    ranks = json.loads((tmp_path / "search" / "valid_ranks.json").read_text())
    assert set(ranks) == {"aat", "aat.stage1", "longer"}
    hits = [r is not None and r <= 10 for r in ranks["aat.stage1"].values()]
    assert sum(hits) / len(hits) == stage1["valid_recall@10"]
    record = json.loads((tmp_path / "search" / "search.json").read_text())
    assert record["reference"] == "aat" and aat["vs_reference"] is None  # the first trial's final model
    for row in (stage1, longer):
        assert row["vs_reference"]["trial"] == "aat" and row["vs_reference"]["users"] == 8
        assert row["vs_reference"]["ndcg@10"]["difference"] == pytest.approx(
            row["valid_ndcg@10"] - aat["valid_ndcg@10"])
    table = (tmp_path / "search" / "search.md").read_text()
    assert table.startswith("Trials (stage 1, and the annealing adapter where `+ AAT`)")
    assert "| aat | + AAT, stage2.max_steps=2 | 3 + 2 |" in table
    assert "| aat.stage1 | stage 1 of aat | 3 |" in table and "| longer | stage1.max_steps=5 | 5 |" in table
    with pytest.raises(ValueError, match="variant 'wo_aat' does not have"):
        run_search(cyclic_data, get_variant("wo_aat"), recipe, trials, tmp_path / "x",
                   load_model=lambda: pytest.fail("loaded before refusing"))


def test_seeded_aat_trials_pair_their_stage_1_with_the_same_seed(cyclic_data, base_dir, tmp_path):
    recipe = replace(TEST_RECIPE, eval_users=8, eval_beams=6, max_users=10)
    results = run_search(cyclic_data, get_variant("full"), recipe, [Trial("base"), Trial("aat", aat=True)],
                         tmp_path / "search", tmp_path / "artifacts", base=str(base_dir), max_steps=2,
                         progress=False, load_model=lambda: load_tiny(base_dir), index=toy_index(cyclic_data),
                         tables=toy_embeddings(cyclic_data), seeds=[42, 7])
    by_name = {r["trial"]: r for r in results}
    assert by_name["aat-seed7.stage1"]["seed_of"] == "aat.stage1" and by_name["aat-seed7.stage1"]["train_seed"] == 7
    assert by_name["aat-seed7.stage1"]["vs_reference"]["trial"] == "base-seed7"
    assert by_name["aat-seed42"]["vs_reference"]["trial"] == "base-seed42"
    # Same seed, same start, same samples, same steps: the stage-1 model of the AAT run is the base run's.
    assert by_name["aat-seed7.stage1"]["valid_ndcg@10"] == by_name["base-seed7"]["valid_ndcg@10"]
    assert by_name["aat-seed7.stage1"]["loss_lm"] == by_name["base-seed7"]["loss_lm"]
    pooled = {p["trial"]: p for p in json.loads((tmp_path / "search" / "search.json").read_text())["pooled"]}
    assert set(pooled) == {"base", "aat", "aat.stage1"} and pooled["aat.stage1"]["seeds"] == [42, 7]


def test_cli_refuses_an_aat_trial_without_an_adapter_before_loading_anything(tmp_path):
    from eager.cli import main

    with pytest.raises(SystemExit, match="does not have: search --variant full"):
        main(["lab", "search", "--dataset", "beauty", "--variant", "wo_aat", "--trial", "a:aat=1",
              "--data-root", str(tmp_path / "no-data")])


def test_cli_compare_names_a_bad_search_trial_before_loading_data(tmp_path, capsys):
    from eager.cli import main

    search = tmp_path / "search"
    search.mkdir()
    (search / "search.json").write_text(json.dumps({"trials": [{"trial": "bad", "error": "RuntimeError: out of memory"},
                                                               {"trial": "good"}]}))
    (search / "valid_ranks.json").write_text(json.dumps({"good": {"U001": 1}}))
    no_data = ["--data-root", str(tmp_path / "no-data")]
    assert main(["lab", "compare", f"{search}:bad", f"{search}:good", *no_data]) == 2
    assert "no scored trial 'bad' (it failed: RuntimeError: out of memory); it has good" in capsys.readouterr().err
    assert main(["lab", "compare", f"{search}:good", f"{search}:good", *no_data]) == 2
    assert "good/config.json: not found; trial 'good'" in capsys.readouterr().err
    assert main(["lab", "compare", f"{tmp_path}:good", f"{search}:good", *no_data]) == 2
    assert "no search.json and valid_ranks.json there" in capsys.readouterr().err
