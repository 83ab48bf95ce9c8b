"""Tokenise samples into batches with response-only labels and the summary position.

Two layouts: one sample per right-padded row, or *packed* rows that hold several samples end to
end (first-fit decreasing), with position ids restarting at every sample. Transformers reads
restarting position ids (with no 2-D attention mask and no cache) as packed sequences and builds a
block-diagonal causal mask, so no sample attends to another; the padding a batch of uneven
lengths would carry is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from eager.index.item_index import CODE_TOKEN_PATTERN
from eager.train.samples import HistorySample, TrainingSample

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE outside what the loss predicts
    # One entry per GCT point (a prompt-and-response seqrec sample has one, at the EOS closing its
    # response; a whole-history sample one per supervised item, at the token that predicts it):
    summary_index: torch.Tensor  # (N,) position in its row
    targets: torch.Tensor  # (N,) index row of the item
    gct_mask: torch.Tensor  # (N,) the points that take part in GCT
    summary_row: torch.Tensor | None = None  # (N,) its row (None: point i is in row i)
    position_ids: torch.Tensor | None = None  # (B, T) restarting per sample when packed
    # Packed only: the samples' boundaries over the concatenated rows (int32, S+1) and the longest
    # sample, for varlen attention (eager.train.attention); computed here, on the host, at collation.
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int | None = None
    # What the loss gathers, found on the host when the batch is built, so a training step on the
    # GPU never waits on a data-dependent shape (a boolean index or nonzero is a host sync per step):
    # flat positions in (B*T) of the tokens whose *next* token is labelled, those next tokens, and
    # the samples that take part in GCT.
    label_positions: torch.Tensor | None = None
    label_ids: torch.Tensor | None = None
    gct_rows: torch.Tensor | None = None

    def __post_init__(self):
        if self.label_positions is None:
            following = torch.full_like(self.labels, IGNORE)
            following[:, :-1] = self.labels[:, 1:]
            where = following.reshape(-1) != IGNORE
            self.label_positions = torch.nonzero(where).squeeze(1)
            self.label_ids = following.reshape(-1)[where]
        if self.gct_rows is None:
            self.gct_rows = torch.nonzero(self.gct_mask).squeeze(1)

    @property
    def packed(self) -> bool:
        return self.position_ids is not None

    @property
    def rows_of_samples(self) -> torch.Tensor:
        return self.summary_row if self.summary_row is not None else torch.arange(len(self.summary_index),
                                                                                   device=self.summary_index.device)

    def _map_tensors(self, fn) -> Batch:
        return Batch(**{f.name: fn(v) if isinstance(v := getattr(self, f.name), torch.Tensor) else v
                        for f in fields(self)})

    def pin_memory(self) -> Batch:
        """Page-locked copies (what a DataLoader with pin_memory calls), so the copy to the GPU runs async."""
        return self._map_tensors(torch.Tensor.pin_memory)

    def to(self, device, non_blocking: bool = False) -> Batch:
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class Encoded:
    """One sample's token ids, which of them the loss predicts, and its GCT points.

    ``labelled``: (start, end) spans of ids the loss falls on; ``gct``: (position, target row) for
    each prediction GCT reads (the position whose hidden state stands for it)."""

    ids: list[int]
    labelled: list[tuple[int, int]]
    gct: list[tuple[int, int]]


def encode(tokenizer, sample: TrainingSample, max_len: int, gct_tasks: Sequence[str] = ("seqrec",)) -> Encoded:
    """Token ids of a sample, with its labelled spans and GCT points.

    A prompt-and-response sample is prompt + response + EOS, the loss on the response and EOS, GCT
    at the EOS (the summary token). An over-long prompt loses tokens from its *left* end: the newest
    history sits at the right. A whole-history sample is its text as the serving prompt tokenises
    it; the loss is on each supervised item's code tokens and GCT at the token before each (the one
    that predicts it).
    """
    if isinstance(sample, HistorySample):
        return _encode_history(tokenizer, sample, max_len, sample.task in gct_tasks)
    prompt = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
    # A very long response (an index2item title) is cut, but still ends with EOS.
    response = tokenizer(sample.response, add_special_tokens=False)["input_ids"][: max_len // 2 - 1]
    response = response + [tokenizer.eos_token_id]
    prompt = prompt[-(max_len - len(response)):]
    ids = prompt + response
    gct = [(len(ids) - 1, sample.target)] if sample.task in gct_tasks and sample.target >= 0 else []
    return Encoded(ids, [(len(prompt), len(ids))], gct)


def _encode_history(tokenizer, sample: HistorySample, max_len: int, with_gct: bool) -> Encoded:
    ids = tokenizer(sample.text, add_special_tokens=False)["input_ids"]
    starts = item_starts(tokenizer, ids, len(sample.rows))
    if len(ids) > max_len:
        raise ValueError(f"a whole-history sample of {len(ids)} tokens exceeds max_len {max_len}: "
                         "lower max_history or raise max_len")
    ends = starts[1:] + [len(ids)]
    spans, gct = [], []
    for j in range(sample.supervised_from, len(sample.rows)):
        width = code_width(tokenizer, ids, starts[j], ends[j])
        spans.append((starts[j], starts[j] + width))
        if with_gct:
            gct.append((starts[j] - 1, sample.rows[j]))
    return Encoded(ids, spans, gct)


def _code_token_ids(tokenizer) -> frozenset[int]:
    cached = getattr(tokenizer, "_eager_code_ids", None)
    if cached is None:
        cached = frozenset(i for t, i in tokenizer.get_added_vocab().items() if CODE_TOKEN_PATTERN.fullmatch(t))
        tokenizer._eager_code_ids = cached
    return cached


def item_starts(tokenizer, ids: Sequence[int], items: int) -> list[int]:
    """Positions where each item's code begins: the first code token after a non-code token."""
    codes = _code_token_ids(tokenizer)
    starts = [p for p, t in enumerate(ids) if t in codes and (p == 0 or ids[p - 1] not in codes)]
    if len(starts) != items:
        raise ValueError(f"found {len(starts)} item codes in a whole-history sample of {items} items: "
                         "is its index's code vocabulary in this tokenizer?")
    return starts


def code_width(tokenizer, ids: Sequence[int], start: int, end: int) -> int:
    codes = _code_token_ids(tokenizer)
    width = 0
    while start + width < end and ids[start + width] in codes:
        width += 1
    return width


def encoded_length(prompt_tokens: int, response_tokens: int, max_len: int) -> int:
    """len(encode(...).ids) from the two parts' token counts: the same cuts, without building the ids."""
    response = min(response_tokens, max_len // 2 - 1) + 1
    return min(prompt_tokens, max_len - response) + response


def token_lengths(tokenizer, samples: Sequence[TrainingSample], max_len: int, chunk: int = 4096) -> list[int]:
    """Each sample's exact encoded length, tokenised in batches (what token-budget batches are cut by)."""
    from tqdm.auto import tqdm

    lengths = []
    for start in tqdm(range(0, len(samples), chunk), desc="token lengths", leave=False):
        part = samples[start : start + chunk]
        texts = [s.text if isinstance(s, HistorySample) else s.prompt for s in part]
        prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
        responses = tokenizer([getattr(s, "response", "") for s in part], add_special_tokens=False)["input_ids"]
        lengths += [len(p) if isinstance(s, HistorySample) else encoded_length(len(p), len(r), max_len)
                    for s, p, r in zip(part, prompts, responses)]
    return lengths


def _gct_fields(encoded: Sequence[Encoded], placed: Sequence[tuple[int, int]]) -> dict:
    """Batch fields of every GCT point: its row, its position in the row, its target.

    ``placed``: (row, offset) where each sample's ids start."""
    rows, index, targets = [], [], []
    for enc, (row, offset) in zip(encoded, placed):
        for position, target in enc.gct:
            rows.append(row)
            index.append(offset + position)
            targets.append(target)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return {"summary_row": as_long(rows), "summary_index": as_long(index), "targets": as_long(targets),
            "gct_mask": torch.ones(len(rows), dtype=torch.bool)}


def collate(tokenizer, samples: Sequence[TrainingSample], max_len: int, gct_tasks: Sequence[str] = ("seqrec",)) -> Batch:
    encoded = [encode(tokenizer, s, max_len, gct_tasks) for s in samples]
    width = max(len(e.ids) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(samples), width), pad, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, enc in enumerate(encoded):
        input_ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
        for a, b in enc.labelled:
            labels[row, a:b] = torch.tensor(enc.ids[a:b])
        mask[row, : len(enc.ids)] = 1
    return Batch(input_ids, mask, labels, **_gct_fields(encoded, [(row, 0) for row in range(len(samples))]))


def pack_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """First-fit decreasing: sample ids per row, each row's total length ≤ ``row_len``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > row_len:
            raise ValueError(f"a sample of {lengths[i]} tokens does not fit a packed row of {row_len}")
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(row_len - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def collate_packed(tokenizer, samples: Sequence[TrainingSample], max_len: int, row_len: int,
                   gct_tasks: Sequence[str] = ("seqrec",)) -> Batch:
    """The samples packed into as few rows of ≤ ``row_len`` tokens as first-fit allows."""
    encoded = [encode(tokenizer, s, max_len, gct_tasks) for s in samples]
    rows = pack_rows([len(e.ids) for e in encoded], max(row_len, max_len))
    width = max(sum(len(encoded[i].ids) for i in row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    # Padding gets positions 0, 1, … of its own: a segment of its own that nothing real attends to.
    positions = torch.arange(width).repeat(len(rows), 1)
    placed = [(0, 0)] * len(samples)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            ids = encoded[i].ids
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            for a, b in encoded[i].labelled:
                labels[r, start + a : start + b] = torch.tensor(ids[a:b])
            mask[r, start:end] = 1
            positions[r, start:end] = torch.arange(len(ids))
            placed[i] = (r, start)
            start = end
        positions[r, start:] = torch.arange(width - start)
    return Batch(input_ids, mask, labels, **_gct_fields(encoded, placed), position_ids=positions,
                 **segments(positions))


def segments(position_ids: torch.Tensor) -> dict:
    """The Batch fields that let varlen attention see each packed sample on its own."""
    from eager.train.attention import segment_bounds

    bounds, longest = segment_bounds(position_ids)
    return {"cu_seqlens": bounds, "max_seqlen": longest}


def bucketed_batches(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, bucket_batches: int = 50, seed: int = 0,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Batches with little padding that are still random.

    ``order`` (an already shuffled list of sample ids) is cut into buckets of ``bucket_batches``
    batches; each bucket is sorted by length and split into batches; the batches are shuffled.
    With ``max_tokens`` (``lengths`` then in tokens), a batch also closes before its lengths would
    pass that sum: sorting by length puts the longest samples together, so a batch of a fixed
    sample count can hold several times the median batch's tokens (4x on Beauty at 512 samples,
    which is what ran an H200 out of memory); a token budget bounds every step's memory.
    """
    import random

    span = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        if max_tokens is None:
            batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
            continue
        current, used = [], 0
        for i in bucket:
            if current and (len(current) == batch_size or used + lengths[i] > max_tokens):
                batches.append(current)
                current, used = [], 0
            current.append(i)
            used += lengths[i]
        if current:
            batches.append(current)
    random.Random(seed).shuffle(batches)
    return batches


def approximate_lengths(samples: Sequence[TrainingSample]) -> list[int]:
    """Character counts: enough to group samples of similar token length, without tokenising."""
    return [len(s.text) if isinstance(s, HistorySample) else len(s.prompt) + len(s.response) for s in samples]


class CollatedBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a stage's batch plan, tokenised and laid out: what a DataLoader worker builds."""

    def __init__(self, tokenizer, samples: Sequence[TrainingSample], batches: Sequence[Sequence[int]], max_len: int,
                 pack_len: int | None):
        self.tokenizer, self.samples, self.batches = tokenizer, samples, batches
        self.max_len, self.pack_len = max_len, pack_len

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        chosen = [self.samples[j] for j in self.batches[i]]
        if self.pack_len:
            return collate_packed(self.tokenizer, chosen, self.max_len, self.pack_len)
        return collate(self.tokenizer, chosen, self.max_len)

    def stream(self, workers: int = 0, pin_memory: bool = False):
        """The batches in order: built here, or ``workers`` processes ahead of the consumer (pinned for a GPU)."""
        if workers == 0:
            return (self[i] for i in range(len(self)))
        return iter(torch.utils.data.DataLoader(self, batch_size=None, shuffle=False, num_workers=workers,
                                                prefetch_factor=4, pin_memory=pin_memory))
