"""Recipe levers measured on validation: named trials of stage 1, each a few changes to a base recipe.

A trial trains the variant's stage 1 only (the levers: learning rate, task mix, how the
code tokens start, how long to train, all show there), with the same step count for every trial
unless the trial changes it, and is scored by the trainer's own validation (the recipe's
``eval_users``, 20 beams). Results go to ``search.json`` and a ``search.md`` table, best first;
each trial's checkpoint, with its resolved recipe, sits beside them. Every trial is also compared
user by user with the first trial that trained (the reference, usually ``base``): on a few hundred
validation users most lever effects are within noise, and the paired interval says which are not.
Each trial's per-user ranks go to ``valid_ranks.json``.

A rerun of one trial with another training seed moves validation about as much as many levers do
(eager/lab/levers.md, "The noise floor"), so ``seeds`` trains every trial once per seed (``NAME-seedN``,
each paired with the reference trial's run of the same seed) and adds a pooled table: each
trial's seeds averaged per user against the reference's, with the interval that resamples the
seeds as well as the users (``eager.lab.compare``). Seeds searched apart pool the same way:
``eager lab compare`` reads a trial of any search as ``SEARCH_DIR:TRIAL`` (``trial_evaluation``).

A trial with ``aat`` trains the variant's annealing adapter after its stage 1, as ``eager train``
does, and is scored after it; its stage-1 model is scored too, as a row of its own
(``NAME.stage1``). That makes the adapter's control one search on one set of users: stage 1 + the
adapter, that stage 1 alone, and stage 1 trained as many steps in all (below; a trial's own
``max_steps`` keeps that stage's clock unless it drops ``max_minutes`` too).

    eager lab search --dataset beauty --recipe multitask-short --trial base --trial lr-2e-3 --max-steps 150
    eager lab search --dataset scientific --recipe seqrec-compact --trial base --trial history-5 --seeds 42,7
    eager lab search --dataset beauty --recipe multitask-short --max-steps 274 \
        --trial 'aat:aat=1,stage2.max_minutes=None,stage2.max_steps=188' \
        --trial 'stage1-462:stage1.max_minutes=None,stage1.max_steps=462'
"""

from __future__ import annotations

import ast
import json
import traceback
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path

from eager.data.dataset import InteractionData
from eager.eval.records import Evaluation
from eager.lab.compare import compare_evaluations
from eager.model.variants import Variant
from eager.train.recipes import TrainRecipe
from eager.train.validation import recorded_selection_recipe, selection_cases

# What a trial is compared with its reference on (the trainer validates at 10).
PAIRED_METRICS = ("recall@10", "ndcg@10")


@dataclass(frozen=True)
class Trial:
    name: str
    changes: tuple[tuple[str, object], ...] = ()  # (dotted field path, value), e.g. ("stage1.lr", 2e-3)
    aat: bool = False  # also train the variant's annealing adapter (stage 2) and score after it


# The key of a trial spec that is not a recipe field: `aat=1` trains stage 2 too.
AAT_KEY = "aat"


# The first levers to measure on Beauty, around MULTITASK_SHORT_RECIPE (stage 1: lr 1e-3, four tasks,
# code tokens from item titles). Each changes one thing.
LEASE_TRIALS = {
    t.name: t
    for t in (
        Trial("base"),
        Trial("lr-2e-3", (("stage1.lr", 2e-3),)),
        Trial("lr-5e-4", (("stage1.lr", 5e-4),)),
        Trial("init-mean", (("token_init", "mean"),)),
        Trial("init-mean-text", (("token_init", "mean+text"),)),
        Trial("seqrec-only", (("stage1.tasks", ("seqrec",)),)),
        Trial("no-fusion", (("stage1.tasks", ("seqrec", "item2index", "index2item")),)),
        Trial("lora-dropout-0", (("stage1.lora.dropout", 0.0),)),
        # Histories capped, in training and in what the model reads: on Beauty no model uses more than
        # five items, and the samples get shorter (README, "How much history").
        Trial("history-5", (("max_history", 5),)),
        Trial("history-10", (("max_history", 10),)),
    )
}


def apply_changes(recipe: TrainRecipe, changes: tuple[tuple[str, object], ...]) -> TrainRecipe:
    """``recipe`` with each dotted field replaced; an unknown field names the ones that exist."""
    for path, value in changes:
        recipe = _replace_path(recipe, path.split("."), value, path)
    return recipe


def _replace_path(obj, parts: list[str], value, path: str):
    names = [f.name for f in fields(obj)]
    head = parts[0]
    if head not in names:
        raise ValueError(f"recipe field {path!r}: {type(obj).__name__} has no {head!r} (it has: {', '.join(names)})")
    if len(parts) == 1:
        current = getattr(obj, head)
        if is_dataclass(current):
            raise ValueError(f"recipe field {path!r} is a group; name one of its fields, e.g. {path}.{fields(current)[0].name}")
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        return replace(obj, **{head: _checked(value, current, path)})
    return replace(obj, **{head: _replace_path(getattr(obj, head), parts[1:], value, path)})


def _checked(value, current, path: str):
    """``value`` if it can stand where ``current`` stands (an int for a float is fine; None is open)."""
    if current is None or value is None:
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current)):
        raise ValueError(f"recipe field {path!r} takes a {type(current).__name__} (now {current!r}), "
                         f"not {value!r}; quote nothing inside a trial spec: stage1.lr=2e-3")
    return value


def parse_trial(text: str) -> Trial:
    """A named trial (``lr-2e-3``) or an ad-hoc one: ``NAME:stage1.lr=2e-3,token_init='mean'``."""
    text = text.strip()
    if ":" not in text:
        if text not in LEASE_TRIALS:
            raise ValueError(f"unknown trial {text!r}; named ones: {', '.join(LEASE_TRIALS)} "
                             "(or write one as NAME:field.path=value,...)")
        return LEASE_TRIALS[text]
    name, _, spec = text.partition(":")
    changes, aat = [], False
    for item in _split_top_level(spec):
        path, eq, raw = item.partition("=")
        if not eq or not path.strip():
            raise ValueError(f"trial {name!r}: {item!r} is not field.path=value")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()  # a bare word such as mean
        if path.strip() == AAT_KEY:
            if value not in (0, 1):  # True and False are 1 and 0
                raise ValueError(f"trial {name!r}: {AAT_KEY}={raw.strip()} takes 1 (train the annealing adapter "
                                 "after stage 1) or 0")
            aat = bool(value)
            continue
        changes.append((path.strip(), value))
    return Trial(name.strip(), tuple(changes), aat)


def _split_top_level(spec: str) -> list[str]:
    """Split on commas outside brackets, so ``stage1.tasks=('seqrec','item2index')`` stays whole."""
    parts, depth, current = [], 0, ""
    for ch in spec:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in (*parts, current) if p.strip()]


def seeded_trials(trials: list[Trial], seeds: list[int] | None) -> list[tuple[Trial, str]]:
    """Each trial with the trial it comes from: once as given, or once per seed (``NAME-seedN``)."""
    if not seeds:
        return [(t, t.name) for t in trials]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeat one: each seed trains once per trial")
    runs = []
    for trial in trials:
        if any(path == "train_seed" for path, _ in trial.changes):
            raise ValueError(f"trial {trial.name!r} sets train_seed itself; drop it there or drop --seeds")
        runs += [(replace(trial, name=f"{trial.name}-seed{seed}", changes=(*trial.changes, ("train_seed", seed))),
                  trial.name) for seed in seeds]
    return runs


def planned_runs(trials: list[Trial], variant: Variant, seeds: list[int] | None) -> list[tuple[Trial, str]]:
    """``seeded_trials``, once every trial can run on ``variant``: an ``aat`` trial needs its adapter."""
    with_aat = [t.name for t in trials if t.aat]
    if with_aat and not variant.use_aat:
        raise ValueError(f"trial {with_aat[0]!r} trains the annealing adapter, which variant {variant.name!r} "
                         "does not have: search --variant full (or wo_gct, wo_dki)")
    return seeded_trials(trials, seeds)


def trial_recipe(recipe: TrainRecipe, trial: Trial, max_steps: int | None = None) -> TrainRecipe:
    """The recipe a trial trains: its changes, then ``max_steps`` stage-1 steps unless it sets its own.
    Those are exact (the stage's clock budget goes), so trials compare at equal steps on any GPU.
    Stage 2 (an ``aat`` trial's) trains as its recipe and the trial's changes say."""
    changed = apply_changes(recipe, trial.changes)
    paths = {path for path, _ in trial.changes}
    if max_steps and "stage1.max_steps" not in paths:
        stage1 = changed.stage1.exact_steps(max_steps)
        if "stage1.max_minutes" in paths:  # a clock the trial asks for stays
            stage1 = replace(stage1, max_minutes=changed.stage1.max_minutes)
        changed = replace(changed, stage1=stage1)
    return replace(changed, name=f"{recipe.name}+{trial.name}")


def run_search(
    data: InteractionData,
    variant: Variant,
    recipe: TrainRecipe,
    trials: list[Trial],
    out_dir: str | Path,
    artifacts: str | Path | None = None,
    base: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    restart: bool = False,
    load_model=None,
    index=None,
    tables=None,
    seeds: list[int] | None = None,
) -> list[dict]:
    """Train each trial's stage 1 (and an ``aat`` trial's stage 2) and rank the trials by validation
    NDCG@10 (then Recall@10).

    ``load_model`` (tests) returns a fresh (model, tokenizer) per trial; by default the backbone is
    loaded from ``base``. A trial whose training fails is recorded with its error, and the search
    goes on: one bad setting must not cost the others. With ``seeds``, every trial trains once per
    training seed and ``search.json`` also holds the trials pooled over their seeds (``pooled``).
    """
    runs = planned_runs(trials, variant, seeds)  # refuses what cannot run before anything loads
    from eager.train.pipeline import embedding_tables, train_variant, variant_index

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Read once for all trials: no trial changes the item codes or the GCT targets.
    index = index or variant_index(data, variant, artifacts, progress=progress)
    if variant.use_gct and tables is None:
        tables = embedding_tables(data, artifacts, progress=progress)
    stage1_only = replace(variant, name=f"{variant.name}.stage1", use_aat=False)  # the checkpoints say what they are
    results: list[dict] = []
    evaluations: dict[str, Evaluation] = {}  # per-user validation ranks of each trial that trained
    family = {trial.name: origin for trial, origin in runs}  # a seeded run -> the trial it is a seed of
    family |= {f"{trial.name}.stage1": f"{origin}.stage1" for trial, origin in runs if trial.aat}
    seed_of = {trial.name: dict(trial.changes).get("train_seed") for trial, _ in runs}
    seed_of |= {f"{name}.stage1": seed for name, seed in seed_of.items() if f"{name}.stage1" in family}

    def write() -> None:  # after every trial, so a search stopped by a clock keeps what it measured
        results.sort(key=lambda r: (r.get("valid_ndcg@10", -1.0), r.get("valid_recall@10", -1.0)), reverse=True)
        reference = next(iter(evaluations), None)
        # The table's floor is scored on the reference's users (a trial may change eval_users or max_users).
        floor = next((r["popularity"] for r in results if r["trial"] == reference), results[0]["popularity"])
        record = {"dataset": data.name, "variant": variant.name, "base_recipe": recipe.name, "max_steps": max_steps,
                  "popularity": floor, "reference": reference, "trials": results}
        if seeds:
            record |= {"seeds": list(seeds), "pooled": pooled_over_seeds(results, evaluations, family)}
        (out / "search.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
        (out / "search.md").write_text(search_table(record) + "\n")
        (out / "valid_ranks.json").write_text(json.dumps({name: e.ranks for name, e in evaluations.items()}) + "\n")

    for trial, origin in runs:
        changed = trial_recipe(recipe, trial, max_steps)
        model, tokenizer = load_model() if load_model else (None, None)
        row = {"trial": trial.name, "changes": {k: v for k, v in trial.changes}, "aat": trial.aat,
               "popularity": popularity_on_selection(data, changed)}  # on this trial's validation users
        try:
            run = train_variant(data, variant if trial.aat else stage1_only, changed, out / trial.name, artifacts,
                                base, progress=progress, model=model, tokenizer=tokenizer, index=index,
                                tables=tables, restart=restart)
        except Exception as err:  # noqa: BLE001 - recorded, and the next trial runs
            row["error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()  # where it failed goes to the log; the table keeps the message
            results.append(row)
            write()
            continue
        scored = [(row, list(run["stage_selections"]))]  # each row with the stages its model trained
        if trial.aat:  # its stage-1 model, scored before the adapter: wo_aat at these stage-1 steps
            scored.append(({"trial": f"{trial.name}.stage1", "changes": row["changes"], "aat": False,
                            "stage1_of": trial.name, "popularity": row["popularity"]}, ["stage1"]))
        for stage_row, stage_names in scored:
            selection = run["stage_selections"][stage_names[-1]]
            stage_row.update({"valid_users": selection["users"], "valid_recall@10": selection["recall@10"],
                              "valid_ndcg@10": selection["ndcg@10"], **_trained(run["history"], stage_names)})
            if seeds:
                stage_row |= {"seed_of": family[stage_row["trial"]], "train_seed": changed.training_seed}
            if selection.get("ranks") is not None:
                name = stage_row["trial"]
                evaluations[name] = selection_evaluation(data, changed, name, selection["ranks"])
                stage_row["vs_reference"] = paired_with_reference(evaluations, name, same_seed_reference(
                    evaluations, family, seed_of, name) if seeds else None)
        results.extend(r for r, _ in scored)
        write()
    return results


def _trained(history: list[dict], stages: list[str]) -> dict:
    """Steps, tokens and seconds over ``stages`` (each stage counts its own), the last one's speed and
    loss; per stage too where there are several."""
    last = {s: [r for r in history if r["stage"] == s][-1] for s in stages}
    final = last[stages[-1]]
    trained = {"steps": sum(r["step"] for r in last.values()), "tokens": sum(r["tokens"] for r in last.values()),
               "tokens_per_s": final["tokens_per_s"], "tokens_per_s_steady": final.get("tokens_per_s_steady"),
               "loss_lm": final.get("loss_lm"), "seconds": round(sum(r["seconds"] for r in last.values()), 1)}
    if len(stages) > 1:
        trained["stage_steps"] = {s: r["step"] for s, r in last.items()}
    return trained


def selection_evaluation(data: InteractionData, recipe: TrainRecipe, name: str, ranks: list) -> Evaluation:
    """A trial's validation as an evaluation of its selection users (ranks come in their order)."""
    cases = selection_cases(data, recipe)
    return _cases_evaluation(data, cases, name, dict(zip((data.user_keys[c.user] for c in cases), ranks)),
                             f"trial {name}")


def _cases_evaluation(data: InteractionData, cases: list, name: str, ranks: dict, source: str) -> Evaluation:
    users = [data.user_keys[c.user] for c in cases]  # in the cases' order, the harness's
    return Evaluation(name, {u: data.item_keys[c.target] for u, c in zip(users, cases)}, {u: ranks[u] for u in users},
                      dataset=data.name, split="valid", source=source)


def read_search_trial(search_dir: str | Path, trial: str) -> tuple[dict, dict]:
    """A scored trial of a finished (or clock-stopped) search: the config its checkpoint records and
    its per-user validation ranks. Runs of one system searched apart (another seed in another
    session) pool from these, with ``trial_evaluation``, as a search's own seeds do."""
    folder = Path(search_dir)
    ranks_file, record_file = folder / "valid_ranks.json", folder / "search.json"
    if not ranks_file.is_file() or not record_file.is_file():
        raise FileNotFoundError(f"{folder}: no search.json and valid_ranks.json there; give a folder written by "
                                "`eager lab search --out`")
    ranks = json.loads(ranks_file.read_text())
    rows = {r["trial"]: r for r in json.loads(record_file.read_text())["trials"]}
    if trial not in ranks:
        failed = f" (it failed: {rows[trial]['error']})" if "error" in rows.get(trial, {}) else ""
        raise ValueError(f"{folder} has no scored trial {trial!r}{failed}; it has {', '.join(sorted(ranks))}")
    # An ``aat`` trial's stage-1 row shares its checkpoint folder, and so its validation users.
    config = folder / rows.get(trial, {}).get("stage1_of", trial) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not found; trial {trial!r}'s checkpoint names the users it was validated "
                                "on, so keep the search folder whole")
    return json.loads(config.read_text()), ranks[trial]


def trial_evaluation(search_dir: str | Path, trial: str, data: InteractionData,
                     recorded: tuple[dict, dict] | None = None) -> Evaluation:
    """A search trial's validation as an evaluation, its users and targets rebuilt from the recipe
    its checkpoint records (seed, eval_users, max_users decide them). ``recorded``: what
    ``read_search_trial`` returned, where the caller has read it already."""
    config, ranks = recorded or read_search_trial(search_dir, trial)
    if config["dataset"] != data.name:
        raise ValueError(f"trial {trial!r} of {search_dir} validated {config['dataset']!r}, not {data.name!r}")
    cases = selection_cases(data, recorded_selection_recipe(config))
    if {data.user_keys[c.user] for c in cases} != set(ranks):
        raise ValueError(f"trial {trial!r} of {search_dir} holds ranks for {len(ranks)} users, but its recipe "
                         f"selects {len(cases)} others from this copy of {data.name}: is it the dataset it "
                         "was searched on?")
    return _cases_evaluation(data, cases, trial, ranks, f"{search_dir}:{trial}")


def paired_with_reference(evaluations: dict[str, Evaluation], name: str, reference: str | None = None) -> dict | None:
    """The trial against ``reference`` (default: the first that trained), user by user; None for the
    reference itself."""
    reference = reference or next(iter(evaluations))
    if reference == name:
        return None
    return _paired(reference, [evaluations[reference]], [evaluations[name]])


def _paired(reference: str, a: list[Evaluation], b: list[Evaluation]) -> dict:
    try:
        result = compare_evaluations(a, b, PAIRED_METRICS)
    except ValueError as err:  # e.g. a trial that changes eval_users validates other users
        return {"trial": reference, "error": str(err)}
    keep = ("difference", "ci_low", "ci_high", "p_value", "b_better_users", "a_better_users", "runs_ci_low",
            "runs_ci_high")
    return {"trial": reference, "users": result["users"],
            **{m["metric"]: {k: m[k] for k in keep if k in m} for m in result["metrics"]}}


def same_seed_reference(evaluations: dict[str, Evaluation], family: dict[str, str], seed_of: dict[str, int | None],
                        name: str) -> str:
    """The reference trial's run with ``name``'s seed (they share the LoRA start and the sample
    order, so they pair more tightly), else the first run that trained. The reference trial's own
    other seeds pair with its first: that row is the noise floor, a rerun against a rerun."""
    first = next(iter(evaluations))
    same = next((n for n in evaluations if family[n] == family[first] and seed_of[n] == seed_of[name]), first)
    return first if same == name else same


def pooled_over_seeds(results: list[dict], evaluations: dict[str, Evaluation], family: dict[str, str]) -> list[dict]:
    """Each trial's seeds together: mean validation, and its seeds against the reference trial's
    seeds, averaged per user, with the interval that resamples the seeds too. Best first."""
    if not evaluations:
        return []
    reference = family[next(iter(evaluations))]
    members = {origin: [n for n in evaluations if family[n] == origin] for origin in dict.fromkeys(family.values())}
    pooled = []
    for origin, names in members.items():
        if not names:  # none of its seeds trained
            continue
        rows = [next(r for r in results if r["trial"] == n) for n in names]  # in training order: the seeds' order
        entry = {"trial": origin, "seeds": [r["train_seed"] for r in rows]}
        for metric in PAIRED_METRICS:
            entry[f"valid_{metric}"] = sum(r[f"valid_{metric}"] for r in rows) / len(rows)
        entry["vs_reference"] = None if origin == reference else _paired(
            reference, [evaluations[n] for n in members[reference]], [evaluations[n] for n in names])
        pooled.append(entry)
    pooled.sort(key=lambda r: (r["valid_ndcg@10"], r["valid_recall@10"]), reverse=True)
    return pooled


def popularity_on_selection(data: InteractionData, recipe: TrainRecipe) -> dict:
    """The most-popular baseline on the very users the trainer validates on: the floor a trial must clear."""
    from eager.baselines.popularity import popularity_ranking
    from eager.eval.metrics import metrics_from_ranks, target_rank

    cases = selection_cases(data, recipe)
    top, keys = popularity_ranking(data, 10), data.item_keys
    return {**metrics_from_ranks([target_rank(top, keys[c.target]) for c in cases], (10,)), "users": len(cases)}


def search_table(record: dict) -> str:
    scope = "Trials (stage 1, and the annealing adapter where `+ AAT`)" if any(
        r.get("aat") for r in record["trials"]) else "Stage-1 trials"
    title = f"{scope} on {record['dataset']} ({record['variant']}, around `{record['base_recipe']}`), " \
            "best validation NDCG@10 first:"
    reference = record.get("reference")
    lines = [title, "", f"| trial | changes | steps | valid R@10 | valid N@10 | N@10 − {reference or 'reference'} "
             "(95 % interval, p) | LM loss | tokens/s |", "|---|---|---|---|---|---|---|---|"]
    for r in record["trials"]:
        changes = ", ".join(["+ AAT"] * bool(r.get("aat")) + [f"{k}={v}" for k, v in r["changes"].items()]) or "—"
        if r.get("stage1_of"):
            changes = f"stage 1 of {r['stage1_of']}"
        if "error" in r:
            lines.append(f"| {r['trial']} | {changes} | failed: {r['error'][:80]} | | | | | |")
            continue
        loss = f"{r['loss_lm']:.3f}" if r.get("loss_lm") is not None else "—"
        steps = " + ".join(map(str, r["stage_steps"].values())) if r.get("stage_steps") else r["steps"]
        lines.append(f"| {r['trial']} | {changes} | {steps} | {r['valid_recall@10']:.4f} | "
                     f"{r['valid_ndcg@10']:.4f} | {_paired_cell(r, reference)} | {loss} | {r['tokens_per_s']:,} |")
    pop = record.get("popularity")
    if pop:
        lines.append(f"| *popularity, same {pop['users']} users* | — | — | {pop['recall@10']:.4f} | "
                     f"{pop['ndcg@10']:.4f} | — | — | — |")
    if record.get("pooled"):
        reference = next((p["trial"] for p in record["pooled"] if p["vs_reference"] is None), "reference")
        lines += ["", f"Pooled over training seeds {', '.join(map(str, record['seeds']))} (each trial's seeds "
                  f"averaged per user against {reference}'s; the last interval resamples the seeds too):", "",
                  f"| trial | seeds | valid R@10 | valid N@10 | N@10 − {reference} (95 % interval, p) | "
                  "N@10 interval, seeds resampled too |", "|---|---|---|---|---|---|"]
        for p in record["pooled"]:
            paired = p["vs_reference"] or {}
            runs = paired.get("ndcg@10", {})
            runs_cell = f"[{runs['runs_ci_low']:+.4f}, {runs['runs_ci_high']:+.4f}]" if "runs_ci_low" in runs else "—"
            lines.append(f"| {p['trial']} | {', '.join(map(str, p['seeds']))} | {p['valid_recall@10']:.4f} | "
                         f"{p['valid_ndcg@10']:.4f} | {_paired_cell({'trial': p['trial'], 'vs_reference': paired}, reference)} | "
                         f"{runs_cell} |")
    return "\n".join(lines)


def _paired_cell(row: dict, reference: str | None) -> str:
    paired = row.get("vs_reference")
    if row["trial"] == reference:
        return "reference"
    if not paired:
        return "—"
    if "error" in paired:
        return "not paired: other users"
    n = paired["ndcg@10"]
    against = "" if paired["trial"] == reference else f" vs {paired['trial']}"  # a seeded run: its seed's reference
    return f"{n['difference']:+.4f} [{n['ci_low']:+.4f}, {n['ci_high']:+.4f}], p {n['p_value']:.2g}{against}"
