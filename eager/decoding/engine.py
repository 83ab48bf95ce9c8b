"""Beam search over the code trie: one prefill, tensor masking, batched over users.

Hugging Face ``generate`` with ``num_beams=W`` prefills every prompt W times and calls a Python
``prefix_allowed_tokens_fn`` per beam per step. Here the prompt is prefilled once (only the last
position's logits are computed) and the beams share it: each step appends the W beam tokens to the
user's one cache row, and a 4-D attention mask lets every beam token see the prompt, its own
ancestors and itself ("tree attention"), so no per-beam copy of the prompt's KV cache is ever
made or reordered. The trie is a dense ``next_node[node, value]`` tensor, so masking a step is one
gather for all users and beams.

Scores are sums of full-vocabulary log-probabilities of the code tokens, the same quantity HF beam
search ranks by with ``length_penalty=0`` and the exact full-catalogue scorer
(:func:`exact_item_scores`) computes by teacher forcing, so the three can be compared directly.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from eager.decoding.trie import CodeTrie, Recommendation
from eager.index.item_index import ItemIndex
from eager.model.code_tokens import CodeVocabulary
from eager.model.prompts import DEFAULT_PROMPT_STYLE, get_prompt_style, seqrec_prompt


@dataclass
class BeamStep:
    """The surviving partial codes after one decoding step, per user, best first."""

    level: int  # 0-based position in the code that was just decoded
    source: str  # the index source of that level: "semantic" or "behaviour"
    beams: list[list[tuple[tuple[int, ...], float]]]


@dataclass
class SearchResult:
    recommendations: list[list[Recommendation]]
    steps: list[BeamStep] = field(default_factory=list)
    # Per user, the best score any code the beam dropped could still reach: a code's score only falls
    # as tokens are added (log-probabilities are ≤ 0), so a dropped prefix's score bounds all its
    # completions. −inf: nothing was dropped.
    pruned_bounds: list[float] = field(default_factory=list)

    def certified(self, k: int) -> list[bool]:
        """Per user: is this top-``k`` provably the exact top-``k`` of the whole catalogue?

        Yes when the k-th score is at least every dropped code's bound, so no dropped item can
        enter the top ``k`` (or nothing was dropped at all).
        """
        return [bound == float("-inf") or (len(recs) >= k and recs[k - 1].score >= bound)
                for recs, bound in zip(self.recommendations, self.pruned_bounds)]


def _left_padded(tokenizer, prompts: Sequence[str], device) -> dict[str, torch.Tensor]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the next token of every prompt sits in the last column
    try:
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return {name: t.to(device) for name, t in enc.items()}


def _cache_argument(model) -> str:
    # transformers ≥ 5.2x renamed ``past_key_values`` to ``cache``; the GPU machine's 5.17 has the old name.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model forwards kwargs
    return "cache" if "cache" in inspect.signature(type(inner).forward).parameters else "past_key_values"


def _returned_cache(out):
    return out.cache if "cache" in out else out.past_key_values


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    # With left padding, a token's position is the number of real tokens before it.
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class BeamSearchEngine:
    """Constrained top-K over an item index for a (merged, possibly NF4) causal LM."""

    def __init__(self, model, tokenizer, index: ItemIndex, vocab: CodeVocabulary, trie: CodeTrie | None = None,
                 prompt_style: str = DEFAULT_PROMPT_STYLE):
        self.model, self.tokenizer, self.index, self.vocab = model, tokenizer, index, vocab
        self.style = get_prompt_style(prompt_style)  # the style the model was trained on
        self.trie = trie or CodeTrie(index, vocab)
        self.device = next(model.parameters()).device
        self.levels, self.k = index.levels, index.k
        self.next_node = self.trie.next_node.to(self.device, torch.long)
        # Token id of (level, value); unused values point at token 0 but the trie never allows them.
        self.token_of = vocab.table.clamp(min=0).to(self.device)
        self.item_of_node = self.trie.item_of_node.to(self.device)
        self.path_nodes = self.trie.path_nodes.to(self.device)
        self.items_under = self.trie.items_under.to(self.device)
        self._cache_kw = _cache_argument(model)
        # Custom 4-D masks are additive, in the dtype the hidden states flow in.
        self.mask_dtype = model.get_input_embeddings().weight.dtype

    @classmethod
    def from_loaded(cls, loaded) -> BeamSearchEngine:
        """The engine for a loaded checkpoint (:class:`eager.decoding.loaded.LoadedModel`), in its prompt style."""
        return cls(loaded.model, loaded.tokenizer, loaded.index, loaded.vocab, loaded.trie, loaded.prompt_style)

    def prompts(self, histories: Sequence[Sequence[str]]) -> list[str]:
        return [seqrec_prompt(self.index, h, self.style.name) for h in histories]

    def prompt_lengths(self, histories: Sequence[Sequence[str]]) -> list[int]:
        """Tokens each history's prompt feeds the model, tokenised exactly as the search does."""
        return _left_padded(self.tokenizer, self.prompts(histories), "cpu")["attention_mask"].sum(1).tolist()

    def _forward(self, input_ids, attention_mask, cache=None, last_only=True):
        """Log-probabilities of the token after ``input_ids`` (computing only the last logits), and the cache."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True,
                         position_ids=_positions(attention_mask)[:, -input_ids.shape[1]:],
                         logits_to_keep=1 if last_only else 0, **{self._cache_kw: cache})
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1), _returned_cache(out)

    @torch.inference_mode()
    def search(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        beams: int = 20,
        trace: bool = False,
        on_step: Callable[[BeamStep], None] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> SearchResult:
        """Top-``k`` items per history (lists of item keys, oldest first) by beam search of width ``beams``.

        ``exclude``: per history, item keys never to return (say, the history itself). They are
        removed from the trie for that user, so no beam is spent on them and ``k`` other items come back.
        """
        return self.search_prompts(self.prompts(histories), k, beams, trace, on_step, exclude)

    def dead_nodes(self, exclude: Sequence[Collection[str]]) -> torch.Tensor:
        """(users, trie nodes) bool: True where every item under the node is excluded for that user."""
        excluded = torch.zeros(len(exclude), self.items_under.shape[0], dtype=torch.long, device=self.device)
        for user, keys in enumerate(exclude):
            rows = sorted({self.index.row(key) for key in keys})
            if rows:
                nodes = self.path_nodes[torch.tensor(rows, device=self.device)].flatten()
                excluded[user].scatter_add_(0, nodes, torch.ones_like(nodes))
        return (excluded > 0) & (excluded == self.items_under)

    @torch.inference_mode()
    def search_prompts(
        self,
        prompts: Sequence[str],
        k: int = 10,
        beams: int = 20,
        trace: bool = False,
        on_step: Callable[[BeamStep], None] | None = None,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> SearchResult:
        """The same search after any prompts (e.g. item2index: a title in, a code out)."""
        if k > beams:
            raise ValueError(f"k={k} needs at least as many beams (got {beams})")
        if not prompts:
            return SearchResult([])
        if exclude is not None and len(exclude) != len(prompts):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(prompts)} prompts: give one set per prompt")
        dead = self.dead_nodes(exclude) if exclude is not None else None
        enc = _left_padded(self.tokenizer, prompts, self.device)
        mask = enc["attention_mask"]
        users = mask.shape[0]
        logp, cache = self._forward(enc["input_ids"], mask)  # (users, vocab), prompts prefilled once
        prompt_mask = mask.bool()
        prompt_lengths = mask.sum(1)  # the position of every beam's first code token
        cached = mask.shape[1]  # cache length: prompt, then one block of beam tokens per decoded level
        ancestors = torch.zeros(users, 1, 0, dtype=torch.long, device=self.device)  # cache slots of each beam's path

        node = torch.zeros(users, 1, dtype=torch.long, device=self.device)  # trie node of every beam
        score = torch.zeros(users, 1, device=self.device)
        codes = torch.zeros(users, 1, 0, dtype=torch.long, device=self.device)
        pruned_bound = torch.full((users,), float("-inf"), device=self.device)
        steps: list[BeamStep] = []
        for level in range(self.levels):
            width = node.shape[1]
            step_logp = logp[:, self.token_of[level]].view(users, width, self.k)
            child = self.next_node[node]  # (users, width, k): −1 where the trie has no such child
            closed = child < 0
            if dead is not None:  # subtrees holding only this user's excluded items
                closed |= dead.gather(1, child.clamp(min=0).view(users, -1)).view_as(child)
            total = (score.unsqueeze(-1) + step_logp).masked_fill(closed, float("-inf"))
            keep = min(beams, width * self.k)
            # One more than kept: the best candidate not kept is the best this level drops.
            score, flat = total.view(users, -1).topk(min(keep + 1, width * self.k), dim=-1)
            if score.shape[1] > keep:
                pruned_bound = torch.maximum(pruned_bound, score[:, keep])
                score, flat = score[:, :keep], flat[:, :keep]
            parent, value = flat // self.k, flat % self.k
            node = child.view(users, -1).gather(1, flat)
            codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, codes.shape[-1])),
                               value.unsqueeze(-1)], dim=-1)
            if trace or on_step:
                step = self._step_view(level, codes, score)
                steps.append(step)
                if on_step:
                    on_step(step)
            if level == self.levels - 1:
                break
            # Tree attention: the new beam tokens are appended to each user's single cache row, each
            # seeing the prompt, its own ancestors and itself. Nothing is copied per beam.
            ancestors = torch.cat([ancestors.gather(1, parent.unsqueeze(-1).expand(-1, -1, ancestors.shape[-1])),
                                   (cached + torch.arange(keep, device=self.device)).expand(users, keep).unsqueeze(-1)],
                                  dim=-1)
            visible = torch.zeros(users, keep, cached + keep, dtype=torch.bool, device=self.device)
            visible[:, :, : prompt_mask.shape[1]] = prompt_mask.unsqueeze(1)
            visible.scatter_(2, ancestors, True)
            additive = torch.zeros(visible.shape, dtype=self.mask_dtype, device=self.device)
            additive.masked_fill_(~visible, torch.finfo(self.mask_dtype).min)
            out = self.model(input_ids=self.token_of[level][value], attention_mask=additive.unsqueeze(1),
                             position_ids=(prompt_lengths + level).unsqueeze(1).expand(users, keep),
                             use_cache=True, **{self._cache_kw: cache})
            cache = _returned_cache(out)
            logp = torch.log_softmax(out.logits.float(), dim=-1).view(users * keep, -1)
            cached += keep
        return SearchResult(self._results(node, score, codes, k), steps if trace else [], pruned_bound.cpu().tolist())

    def _step_view(self, level: int, codes: torch.Tensor, score: torch.Tensor) -> BeamStep:
        alive = torch.isfinite(score).cpu()
        codes_cpu, score_cpu = codes.cpu().tolist(), score.cpu().tolist()
        beams = [[(tuple(c), s) for c, s, ok in zip(codes_cpu[u], score_cpu[u], alive[u].tolist()) if ok]
                 for u in range(len(codes_cpu))]
        return BeamStep(level, self.index.level_sources[level], beams)

    def _results(self, node, score, codes, k: int) -> list[list[Recommendation]]:
        items = self.item_of_node[node].cpu().tolist()
        scores = score.cpu().tolist()
        results = []
        for user_items, user_scores in zip(items, scores):
            ranked = []
            for row, s in zip(user_items, user_scores):
                if row >= 0 and s != float("-inf") and len(ranked) < k:
                    key = self.index.keys[row]
                    ranked.append(Recommendation(key, self.index.text_of(key), float(s)))
            results.append(ranked)
        return results


@torch.inference_mode()
def exact_item_scores(engine: BeamSearchEngine, history: Sequence[str], chunk: int = 256) -> torch.Tensor:
    """Teacher-forced log-likelihood of every item's code after ``history`` (index row order).

    The reference the beam search is checked against: with a beam at least as wide as the widest
    trie level, beam search must return exactly the top of this ranking.
    """
    enc = _left_padded(engine.tokenizer, engine.prompts([history]), engine.device)
    logp0, cache = engine._forward(enc["input_ids"], enc["attention_mask"])
    ids = engine.vocab.ids_for(engine.index.codes).to(engine.device)  # (items, levels)
    scores = []
    for start in range(0, ids.shape[0], chunk):
        part = ids[start : start + chunk]
        n = part.shape[0]
        total = logp0[0, part[:, 0]]
        if engine.levels > 1:
            expanded = copy.deepcopy(cache)
            expanded.batch_repeat_interleave(n)
            mask = torch.ones(n, enc["attention_mask"].shape[1] + engine.levels - 1, dtype=torch.long, device=engine.device)
            mask[:, : enc["attention_mask"].shape[1]] = enc["attention_mask"]
            out = engine.model(input_ids=part[:, :-1], attention_mask=mask, use_cache=True,
                               position_ids=_positions(mask)[:, -(engine.levels - 1):], **{engine._cache_kw: expanded})
            logp = torch.log_softmax(out.logits.float(), dim=-1)  # (n, levels-1, vocab)
            total = total + logp.gather(2, part[:, 1:].unsqueeze(-1)).squeeze(-1).sum(-1)
        scores.append(total)
    return torch.cat(scores).cpu()


@dataclass
class ExactTopK:
    recommendations: list[list[Recommendation]]
    # Per user, the beam width whose result was certified exact; None: full-catalogue scoring decided.
    beams_needed: list[int | None]
    # The plain beam search at the first width, for every user: what the exact answer corrects
    # (None where no beam ran: a first width beyond max_beams).
    at_first_width: list[list[Recommendation] | None]


@torch.inference_mode()
def exact_top_k(engine: BeamSearchEngine, histories: Sequence[Sequence[str]], k: int = 10, beams: int = 20,
                growth: int = 4, max_beams: int = 4096, beams_per_batch: int = 4096,
                exclude: Sequence[Collection[str]] | None = None) -> ExactTopK:
    """The exact top-``k`` of the whole catalogue for every history, found by widening the beam.

    Each user is searched at ``beams``; a user whose result :meth:`SearchResult.certified` does not
    prove exact is searched again ``growth`` times wider, up to ``max_beams`` (the tree attention's
    memory grows with the square of the width); past that :func:`exact_item_scores` decides. The
    answer is the same as ranking every item by teacher forcing, at the cost of the widths the
    users actually need. ``beams_per_batch`` bounds users × width in one search. ``exclude``: per
    history, item keys left out of its catalogue (as in :meth:`BeamSearchEngine.search`).
    """
    if k > beams:
        raise ValueError(f"k={k} needs at least as many beams (got {beams})")
    recommendations: list[list[Recommendation] | None] = [None] * len(histories)
    first: list[list[Recommendation] | None] = [None] * len(histories)
    needed: list[int | None] = [None] * len(histories)
    catalogue = len(engine.index.keys)  # a beam this wide drops nothing, so it is always exact
    widest = min(catalogue, max_beams)
    widths, width = [], min(beams, catalogue)
    while width <= widest:
        widths.append(width)
        if width == widest:
            break
        width = min(width * growth, widest)
    pending = list(range(len(histories)))
    for width in widths:
        per_batch, still = max(1, beams_per_batch // width), []
        for start in range(0, len(pending), per_batch):
            users = pending[start : start + per_batch]
            result = engine.search([histories[u] for u in users], k=k, beams=width,
                                   exclude=None if exclude is None else [exclude[u] for u in users])
            for user, recs, exact in zip(users, result.recommendations, result.certified(k)):
                if first[user] is None:
                    first[user] = recs
                if exact:
                    recommendations[user], needed[user] = recs, width
                else:
                    still.append(user)
        pending = still
        if not pending:
            break
    for user in pending:
        scores = exact_item_scores(engine, histories[user])
        if exclude is not None and exclude[user]:
            scores[[engine.index.row(key) for key in exclude[user]]] = float("-inf")
        top = scores.topk(min(k, catalogue))
        keys = [engine.index.keys[i] for i, s in zip(top.indices.tolist(), top.values.tolist()) if s > float("-inf")]
        recommendations[user] = [Recommendation(key, engine.index.text_of(key), float(s))
                                 for key, s in zip(keys, top.values.tolist())]
    return ExactTopK(recommendations, needed, first)
