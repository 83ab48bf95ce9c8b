"""What the demo does, as plain functions over one dataset and its checkpoints (no Gradio here).

``app.py`` wires these into a UI and the tests call them directly. Shared, read-only things (the
dataset, the loaded models) live on the service; everything about one visitor (their history, the
held-out item) is passed in and returned, so the UI can keep it in per-session state.

Every failure a visitor can cause raises :class:`DemoError` with a message meant for them.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eager.data.dataset import InteractionData
from eager.data.split import DEFAULT_MAX_HISTORY, eval_cases
from eager.decoding.engine import BeamStep, SearchResult
from eager.decoding.trie import Recommendation
from eager.index.item_index import INDEX_FILE, ItemIndex
from eager.model.prompts import recorded_history_window
from eager.model.variants import VARIANTS

CHECKPOINTS_ENV = "EAGER_CHECKPOINTS"
DATASET_ENV = "EAGER_DEMO_DATASET"


class DemoError(ValueError):
    """A problem the visitor can fix (or must be told about), with the message to show them."""


@dataclass(frozen=True)
class DemoConfig:
    dataset: str = "beauty"
    data_root: str | None = None  # default: $EAGER_DATA_ROOT, else ./data
    checkpoints: str | None = None  # default: $EAGER_CHECKPOINTS, else ./checkpoints
    dtype: str = "auto"  # nf4-mlp on CPU, bf16 on CUDA (eager.serve.loader.choose_serving)
    beams: int = 20
    max_k: int = 20
    model_history: int = DEFAULT_MAX_HISTORY  # the most a model reads: the protocol's history, as evaluated
    max_input: int = 200  # longer histories are refused rather than silently cut
    base: str | None = None  # another backbone, for checkpoints trained on one

    @classmethod
    def from_env(cls) -> DemoConfig:
        return cls(dataset=os.environ.get(DATASET_ENV, "beauty"), checkpoints=os.environ.get(CHECKPOINTS_ENV))


@dataclass
class VariantModel:
    name: str
    engine: object  # eager.decoding.engine.BeamSearchEngine
    config: dict
    serving: str  # how it is served, for the status line
    load_s: float
    history_window: int  # how many of a history's last items it reads


@dataclass
class Recommended:
    rank: int
    key: str
    title: str
    code: str
    score: float
    shares: list[dict] = field(default_factory=list)  # history items sharing a semantic/behaviour prefix


@dataclass
class RecommendOutcome:
    variant: str
    history: list[str]
    items: list[Recommended]
    steps: list[BeamStep]
    seconds: float
    held_out: str | None = None
    held_out_rank: int | None = None  # 1-based rank in the top-k, None if absent
    notes: list[str] = field(default_factory=list)
    # Is the list provably the model's exact top-k over the whole catalogue (no code the beam
    # dropped could have scored higher)? See SearchResult.certified.
    exact: bool | None = None
    # Were the history's own items left out of the search (what a shopper expects; the evaluation
    # protocol keeps them, so the raw list is one switch away)?
    hid_history: bool = False


def _minutes(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"  # not a metric: no four decimals


def _clean_keys(keys: Sequence[str] | None) -> list[str]:
    """Item keys as a visitor or API client sent them, stripped, blanks dropped."""
    return [str(k).strip() for k in (keys or []) if str(k).strip()]


def _card_row(variant: str, recipe: str | None, recorded: dict, train_minutes: float | None, window: int) -> dict:
    """One model-card row from what a checkpoint (or a rerun of it) recorded."""
    # A recorded full validation run (`eager eval --split valid --record`), else the trainer's subset.
    valid = recorded.get("valid") or recorded.get("selection", {})
    test = recorded.get("test", {})  # written by `eager eval --checkpoint DIR --split test --record`
    return {"variant": variant, "recipe": recipe, "valid users": valid.get("users"),
            "valid recall@10": valid.get("recall@10"), "valid ndcg@10": valid.get("ndcg@10"),
            "train minutes": _minutes(train_minutes), "history read": window, "test users": test.get("users"),
            "test recall@10": test.get("recall@10"), "test ndcg@10": test.get("ndcg@10")}


class DemoService:
    def __init__(self, config: DemoConfig | None = None):
        self.config = config or DemoConfig.from_env()
        self._data: InteractionData | None = None
        self._titles: list[str] | None = None
        self._lower_titles: np.ndarray | None = None
        self._models: dict[str, VariantModel] = {}
        self._locks = {name: threading.Lock() for name in VARIANTS}
        self._data_lock = threading.Lock()
        self._index: tuple[str, ItemIndex] | None = None
        self._shoppers: list | None = None
        # Per variant, where its start-up warm-up stands: "waiting", "loading", "ready" or "failed: why".
        self.warmup: dict[str, str] = {}
        self._warmup_thread: threading.Thread | None = None

    # --- data ---------------------------------------------------------------------------

    @property
    def checkpoint_root(self) -> Path:
        return Path(self.config.checkpoints or os.environ.get(CHECKPOINTS_ENV) or "checkpoints") / self.config.dataset

    @property
    def data(self) -> InteractionData:
        from eager.data import DataNotFoundError, load_dataset

        with self._data_lock:
            if self._data is None:
                try:
                    self._data = load_dataset(self.config.dataset, self.config.data_root)
                except DataNotFoundError as err:
                    raise DemoError(
                        f"The {self.config.dataset} dataset is not on this machine. {err} "
                        f"Get it with `eager data prepare --dataset {self.config.dataset}` (it downloads the official "
                        "files), or point $EAGER_DATA_ROOT at a folder that has it, then restart the app."
                    ) from None
                self._titles = self._data.titles
                self._lower_titles = np.array([t.lower() for t in self._titles], dtype=object)
        return self._data

    def title(self, key: str) -> str:
        row = self.data.key_to_index().get(key)
        return (self._titles[row] or "(no title)") if row is not None else "(not in the catalogue)"

    def item_info(self, key: str) -> dict:
        """What a product card shows: title, brand, its most specific category, the picture's address."""
        from eager.data.dataset import IMAGE_FIELD

        row = self.data.key_to_index().get(key)
        if row is None:
            return {"key": key, "title": "(not in the catalogue)", "brand": "", "category": "", "image": ""}
        item = self.data.items.iloc[row]
        categories = [c.strip() for c in str(item.get("categories", "") or "").split(",") if c.strip()]
        return {"key": key, "title": self.title(key), "brand": str(item.get("brand", "") or ""),
                "category": categories[-1] if categories else "", "image": str(item.get(IMAGE_FIELD, "") or "")}

    def shoppers(self, count: int = 6) -> list:
        """Real test users to start from, each with a one-line theme (eager.demo.shoppers), chosen once."""
        from eager.demo.shoppers import pick_shoppers

        if self._shoppers is None:
            self._shoppers = pick_shoppers(self.data, max(count, 6))
        return self._shoppers[:count]

    def search(self, query: str, limit: int = 25) -> list[tuple[str, str]]:
        """(label, key) of items whose title holds every word of ``query`` (or whose key is ``query``)."""
        data = self.data
        query = (query or "").strip()
        if not query:
            return []
        if len(query) > 200:
            raise DemoError("That search is over 200 characters; type a few words of a product title.")
        found: list[int] = []
        exact = data.key_to_index().get(query)
        if exact is not None:
            found.append(exact)
        words = [w for w in query.lower().split() if w]
        mask = np.ones(len(self._lower_titles), dtype=bool)
        for word in words:
            mask &= np.array([word in t for t in self._lower_titles])
        found += [int(i) for i in np.flatnonzero(mask)[: limit * 2] if i != exact]
        keys = data.item_keys
        return [(f"{self._titles[i] or '(no title)'} · {keys[i]}", keys[i]) for i in found[:limit]]

    def check_history(self, keys: Sequence[str], reads: int | None = None) -> tuple[list[str], list[str]]:
        """(the keys a model reading the last ``reads`` items (default: the protocol's 20) sees, notes for
        the visitor); refuses what cannot be served."""
        keys = _clean_keys(keys)
        if not keys:
            raise DemoError("The history is empty: add at least one item (search the catalogue, or load a real user).")
        if len(keys) > self.config.max_input:
            raise DemoError(f"The history has {len(keys)} items; at most {self.config.max_input} are accepted "
                            f"(the model reads the last {self.config.model_history}). Remove some items.")
        lookup = self.data.key_to_index()
        unknown = [k for k in keys if k not in lookup]
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            raise DemoError(f"Not in the {self.config.dataset} catalogue: {shown}"
                            f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}. "
                            "Use item keys from the catalogue search (e.g. "
                            f"{self.data.item_keys[0]!r}).")
        reads = reads or self.config.model_history
        notes = []
        if len(keys) > reads:
            notes.append(f"The model reads the last {reads} of your {len(keys)} items.")
        return keys[-reads:], notes

    def user_case(self, user: str | None = None, seed: int | None = None, split: str = "test") -> dict:
        """A real user's history and the item they bought next (held out from training for ``test``)."""
        data = self.data
        cases = eval_cases(data, split, self.config.model_history)
        if user:
            by_key = {data.user_keys[c.user]: c for c in cases}
            case = by_key.get(user.strip())
            if case is None:
                raise DemoError(f"No user {user.strip()[:40]!r} in the {self.config.dataset} test split "
                                f"(user ids look like {data.user_keys[cases[0].user]!r}).")
        else:
            case = random.Random(seed).choice(cases)
        keys = data.item_keys
        return {"user": data.user_keys[case.user], "history": [keys[i] for i in case.history],
                "held_out": keys[case.target]}

    # --- models -------------------------------------------------------------------------

    def available_variants(self) -> list[str]:
        return [name for name in VARIANTS if (self.checkpoint_root / name / "config.json").exists()]

    def status(self) -> str:
        lines = []
        try:
            stats = self.data.stats()
            lines.append(f"**Data** {self.config.dataset}: {stats['items']:,} items, {stats['users']:,} users.")
        except DemoError as err:
            lines.append(f"**Data missing.** {err}")
        variants = self.available_variants()
        if not variants:
            lines.append(f"**No checkpoints** under `{self.checkpoint_root}`: train one with "
                         f"`eager train --dataset {self.config.dataset} --variant full` (a GPU run), or set "
                         f"${CHECKPOINTS_ENV}. Catalogue search and real users still work.")
        for name in variants:
            model, warm = self._models.get(name), self.warmup.get(name)
            if warm == "ready" and model:
                state = f"ready ({model.serving}, loaded in {model.load_s:.1f} s)"
            elif warm and warm != "ready":
                state = {"waiting": "waiting to load", "loading": "loading…"}.get(warm, warm)
            else:
                state = f"loaded ({model.serving}, {model.load_s:.1f} s)" if model else "loads on first use"
            lines.append(f"- `{name}`: {state}")
        return "\n".join(lines)

    def status_line(self) -> str:
        """One line for the top of the page: how many models are ready, while the warm-up runs."""
        variants = self.available_variants()
        if not variants:
            return "No trained models here yet: see Status below."
        if not self.warmup:
            return f"{len(variants)} models, each loaded on first use."
        ready = [v for v in variants if self.warmup.get(v) == "ready"]
        failed = [v for v in variants if self.warmup.get(v, "").startswith("failed")]
        if len(ready) + len(failed) == len(variants):
            line = f"All {len(ready)} models ready." if not failed else \
                f"{len(ready)} models ready; {', '.join(failed)} could not be loaded (see Status)."
            return line
        loading = next((v for v in variants if self.warmup.get(v) == "loading"), None)
        return (f"Warming up: {len(ready)} of {len(variants)} models ready"
                + (f" ({', '.join(ready)})" if ready else "") + (f", loading {loading}…" if loading else "…"))

    def ready(self) -> bool:
        """Has the start-up warm-up finished (every variant ready or failed)?"""
        return bool(self.warmup) and all(v not in ("waiting", "loading") for v in self.warmup.values())

    def warm_up(self, variants: Sequence[str] | None = None, background: bool = True) -> threading.Thread | None:
        """Load every shipped variant and run one recommendation through each, so no visitor waits
        for a cold start: in a background thread (the app serves meanwhile, ``status`` says how far
        it is), or here with ``background=False``."""
        names = list(variants or self.available_variants())
        self.warmup = {name: "waiting" for name in names}

        def run():
            try:
                shoppers = self.shoppers(1)
                history = shoppers[0].history if shoppers else self.data.item_keys[:3]
            except DemoError:
                history = []
            for name in names:
                self.warmup[name] = "loading"
                try:
                    self.model(name)
                    if history:
                        self.recommend(history, name, k=min(10, self.config.max_k))
                    self.warmup[name] = "ready"
                except Exception as err:  # a broken variant is reported, and the others still warm up
                    self.warmup[name] = f"failed: {str(err)[:200]}"

        if not background:
            run()
            return None
        self._warmup_thread = threading.Thread(target=run, name="eager-warm-up", daemon=True)
        self._warmup_thread.start()
        return self._warmup_thread

    def model(self, variant: str) -> VariantModel:
        if variant not in VARIANTS:
            raise DemoError(f"Unknown variant {str(variant)[:40]!r}; choose one of: {', '.join(VARIANTS)}.")
        folder = self.checkpoint_root / variant
        if not (folder / "config.json").exists():
            have = ", ".join(self.available_variants()) or "none"
            raise DemoError(f"No checkpoint for variant {variant!r} at {folder} (available: {have}). "
                            f"Train it with `eager train --dataset {self.config.dataset} --variant {variant}`.")
        with self._locks[variant]:  # two first requests must not load the same model twice
            if variant not in self._models:
                from eager.decoding.engine import BeamSearchEngine
                from eager.serve.loader import load_for_serving

                try:
                    loaded, choice, timings = load_for_serving(folder, self.config.dtype, self.config.base)
                except Exception as err:  # a corrupt or mismatched checkpoint must not take the app down
                    raise DemoError(f"Variant {variant!r} could not be loaded from {folder}: {err}") from err
                engine = BeamSearchEngine.from_loaded(loaded)
                self._models[variant] = VariantModel(variant, engine, loaded.config,
                                                     f"{choice.dtype} on {choice.device}", timings["load_s"],
                                                     loaded.history_window)
        return self._models[variant]

    def index(self) -> ItemIndex:
        """The index of the first available variant (all dual variants share it), read once."""
        for name in self.available_variants():
            if self._index is None or self._index[0] != name:
                self._index = (name, ItemIndex.load(self.checkpoint_root / name / INDEX_FILE))
            return self._index[1]
        raise DemoError(f"No checkpoint under {self.checkpoint_root}, so there is no item index to explore yet.")

    # --- recommending -------------------------------------------------------------------

    def _check_k(self, k) -> int:
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise DemoError(f"k must be a whole number, not {str(k)[:20]!r}.") from None
        if not 1 <= k <= self.config.max_k:
            raise DemoError(f"k must be between 1 and {self.config.max_k} (got {k}).")
        return k

    def recommend(self, history: Sequence[str], variant: str = "full", k: int = 10, held_out: str | None = None,
                  on_step: Callable[[BeamStep], None] | None = None, hide_history: bool = True) -> RecommendOutcome:
        """The top ``k`` of one variant for a history; ``hide_history``: never recommend an item the
        history already holds (all of it, also beyond what the model reads)."""
        k = self._check_k(k)
        self.check_history(history)  # a bad history is refused before any model loads
        model = self.model(variant)
        keys, notes = self.check_history(history, model.history_window)
        exclude = [set(_clean_keys(history))] if hide_history else None  # all of it, checked above
        started = time.perf_counter()
        result: SearchResult = model.engine.search([keys], k=k, beams=max(k, self.config.beams), trace=True,
                                                   on_step=on_step, exclude=exclude)
        seconds = time.perf_counter() - started
        items = [self._explain(rank, rec, keys, model.engine.index)
                 for rank, rec in enumerate(result.recommendations[0], start=1)]
        rank = next((i.rank for i in items if i.key == held_out), None) if held_out else None
        return RecommendOutcome(variant, keys, items, result.steps, seconds, held_out, rank, notes,
                                exact=result.certified(k)[0], hid_history=hide_history)

    def recommend_stream(self, history: Sequence[str], variant: str = "full", k: int = 10,
                         held_out: str | None = None, hide_history: bool = True) -> Iterator[BeamStep | RecommendOutcome]:
        """Yields each decoding step as it happens, then the outcome (errors are raised, not yielded)."""
        events: queue.Queue = queue.Queue()

        def run():
            try:
                events.put(self.recommend(history, variant, k, held_out, on_step=events.put, hide_history=hide_history))
            except BaseException as err:  # handed to the consumer thread, which raises it
                events.put(err)

        threading.Thread(target=run, daemon=True).start()
        while True:
            event = events.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, RecommendOutcome):
                return

    def _explain(self, rank: int, rec: Recommendation, history: list[str], index: ItemIndex) -> Recommended:
        code = index.code_of(rec.key)
        shares = []
        for source in ("semantic", "behaviour"):
            levels = [lv for lv, s in enumerate(index.level_sources) if s == source]
            if not levels:
                continue
            for key in dict.fromkeys(history):
                other = index.code_of(key)
                depth = 0
                while depth < len(levels) and other[levels[depth]] == code[levels[depth]]:
                    depth += 1
                if depth:
                    prefix = "".join(index.tokens_of(rec.key)[lv] for lv in levels[:depth])
                    shares.append({"source": source, "depth": depth, "prefix": prefix, "key": key,
                                   "title": self.title(key)})
        return Recommended(rank, rec.key, self.title(rec.key), rec.code, rec.score, shares)

    def compare(self, history: Sequence[str], variants: Sequence[str] | None = None, k: int = 10,
                held_out: str | None = None, hide_history: bool = True) -> dict:
        """Every variant on the same history: lists, pairwise overlap, held-out rank, latency."""
        available = self.available_variants()
        if not available:
            raise DemoError(f"No checkpoints under {self.checkpoint_root}: nothing to compare. "
                            f"Train one with `eager train --dataset {self.config.dataset} --variant full`.")
        asked = list(variants or available)
        unknown = [v for v in asked if v not in VARIANTS]
        if unknown:
            raise DemoError(f"Unknown variant {str(unknown[0])[:40]!r}; choose from: {', '.join(VARIANTS)}.")
        # A variant without a checkpoint is reported beside the others instead of failing the comparison.
        skipped = {v: f"no checkpoint at {self.checkpoint_root / v}" for v in asked if v not in available}
        variants = [v for v in asked if v in available]
        if not variants:
            have = ", ".join(available) or "none"
            raise DemoError(f"None of the chosen variants has a checkpoint under {self.checkpoint_root} "
                            f"(available: {have}); tick one that is, or train it with `eager train`.")
        outcomes = {name: self.recommend(history, name, k, held_out, hide_history=hide_history) for name in variants}
        tops = {name: {i.key for i in o.items} for name, o in outcomes.items()}
        overlap = {a: {b: len(tops[a] & tops[b]) for b in variants} for a in variants}
        return {"outcomes": outcomes, "overlap": overlap, "k": k, "skipped": skipped}

    # --- the index and the language side ------------------------------------------------

    def lookup(self, key: str, neighbours: int = 10) -> dict:
        key = (key or "").strip()
        if key not in self.data.key_to_index():
            raise DemoError(f"{key[:40]!r} is not an item key of {self.config.dataset}; search the catalogue for one.")
        index = self.index()
        code = np.array(index.code_of(key))
        shared = np.cumprod(index.codes == code, axis=1).sum(1)  # length of the common code prefix
        shared[index.row(key)] = -1
        order = np.argsort(-shared, kind="stable")[:neighbours]
        return {"key": key, "title": self.title(key), "code": index.text_of(key),
                "level_sources": index.level_sources,
                "nearest": [{"key": index.keys[i], "title": self.title(index.keys[i]), "code": index.text_of(index.keys[i]),
                             "shared_levels": int(shared[i])} for i in order]}

    def probe_variants(self) -> list[str]:
        """What the language probe sets side by side: annealed (`full`) against not (`wo_aat`)."""
        available = self.available_variants()
        return [v for v in ("full", "wo_aat") if v in available]

    def code_to_title(self, code: str, variant: str = "full", max_new_tokens: int = 32) -> dict:
        """index2item: the title the model writes for an item code, beside the real title."""
        import torch

        model = self.model(variant)
        index = model.engine.index
        key = self._key_of_code_text(code, index)
        tokenizer = model.engine.tokenizer
        prompt = model.engine.style.prompt("index2item", item=index.text_of(key))
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.engine.device)
        from transformers import GenerationConfig

        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, temperature=None,
                                  top_k=None, top_p=None, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.engine.model.generate(**ids, generation_config=config)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        return {"key": key, "code": index.text_of(key), "generated": text, "title": self.title(key),
                "seconds": round(time.perf_counter() - started, 2), "variant": variant}

    def title_to_code(self, title: str, variant: str = "full", k: int = 5) -> dict:
        """item2index: the codes the model generates for a title (constrained to real items)."""
        title = (title or "").strip()
        if not title:
            raise DemoError("Type a product title (any text) to see which item codes the model writes for it.")
        if len(title) > 300:
            raise DemoError("That title is over 300 characters; shorten it.")
        model = self.model(variant)
        prompt = model.engine.style.prompt("item2index", title=title)
        started = time.perf_counter()
        result = model.engine.search_prompts([prompt], k=k, beams=max(k, self.config.beams))
        return {"title": title, "variant": variant, "seconds": round(time.perf_counter() - started, 2),
                "codes": [{"code": r.code, "key": r.key, "title": self.title(r.key), "score": r.score}
                          for r in result.recommendations[0]]}

    def _key_of_code_text(self, code: str, index: ItemIndex) -> str:
        text = (code or "").strip()
        if text in self.data.key_to_index():  # an item key works too
            return text
        values = [int(v) for v in re.findall(r"<[a-z]_(\d+)>", text)]
        found = index.key_of_code(values) if len(values) == index.levels else None
        if found is None:
            example = index.text_of(index.keys[0])
            raise DemoError(f"{text[:60]!r} is not the code of any item; codes look like {example} "
                            "(or give an item key).")
        return found

    # --- model card ---------------------------------------------------------------------

    def model_card(self) -> dict:
        from eager.data.registry import TERMS, get_spec

        rows, reruns, configs = [], [], {}
        for name in self.available_variants():
            folder = self.checkpoint_root / name
            config = json.loads((folder / "config.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
            recipe, window = config.get("recipe", {}).get("name"), recorded_history_window(config)
            rows.append(_card_row(name, recipe, metrics, config.get("train_minutes"), window))
            configs[name] = config
            for rerun in metrics.get("reruns", []):  # `eager lab rerun`: the same variant on another training seed
                reruns.append(_card_row(f"{name}, train seed {rerun['train_seed']}", recipe, rerun,
                                        rerun.get("train_minutes"), window))
        spec = get_spec(self.config.dataset)
        return {"rows": rows, "reruns": reruns, "configs": configs, "dataset": self.config.dataset,
                "terms": TERMS[spec.raw.kind]}
