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

from eager.train.samples import Sample

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE outside the response (+ EOS)
    summary_index: torch.Tensor  # (N,) per sample: position of the EOS closing the response
    targets: torch.Tensor  # (N,) index row of the item the response names (-1: none)
    gct_mask: torch.Tensor  # (N,) samples that take part in GCT (seqrec)
    summary_row: torch.Tensor | None = None  # (N,) row of each sample (None: sample i is row i)
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


def encode(tokenizer, sample: Sample, max_len: int) -> tuple[list[int], int]:
    """Token ids of prompt + response + EOS, and how many belong to the prompt.

    An over-long prompt loses tokens from its *left* end: the newest history sits at the right.
    """
    prompt = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
    # A very long response (an index2item title) is cut, but still ends with EOS.
    response = tokenizer(sample.response, add_special_tokens=False)["input_ids"][: max_len // 2 - 1]
    response = response + [tokenizer.eos_token_id]
    prompt = prompt[-(max_len - len(response)):]
    return prompt + response, len(prompt)


def encoded_length(prompt_tokens: int, response_tokens: int, max_len: int) -> int:
    """len(encode(...)[0]) from the two parts' token counts: the same cuts, without building the ids."""
    response = min(response_tokens, max_len // 2 - 1) + 1
    return min(prompt_tokens, max_len - response) + response


def token_lengths(tokenizer, samples: Sequence[Sample], max_len: int, chunk: int = 4096) -> list[int]:
    """Each sample's exact encoded length, tokenised in batches (what token-budget batches are cut by)."""
    from tqdm.auto import tqdm

    lengths = []
    for start in tqdm(range(0, len(samples), chunk), desc="token lengths", leave=False):
        part = samples[start : start + chunk]
        prompts = tokenizer([s.prompt for s in part], add_special_tokens=False)["input_ids"]
        responses = tokenizer([s.response for s in part], add_special_tokens=False)["input_ids"]
        lengths += [encoded_length(len(p), len(r), max_len) for p, r in zip(prompts, responses)]
    return lengths


def collate(tokenizer, samples: Sequence[Sample], max_len: int, gct_tasks: Sequence[str] = ("seqrec",)) -> Batch:
    encoded = [encode(tokenizer, s, max_len) for s in samples]
    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(samples), width), pad, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[row, : len(ids)] = 1
    return Batch(
        input_ids, mask, labels,
        summary_index=torch.tensor([len(ids) - 1 for ids, _ in encoded]),
        targets=torch.tensor([s.target for s in samples]),
        gct_mask=torch.tensor([s.task in gct_tasks and s.target >= 0 for s in samples]),
    )


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


def collate_packed(tokenizer, samples: Sequence[Sample], max_len: int, row_len: int,
                   gct_tasks: Sequence[str] = ("seqrec",)) -> Batch:
    """The samples packed into as few rows of ≤ ``row_len`` tokens as first-fit allows."""
    encoded = [encode(tokenizer, s, max_len) for s in samples]
    rows = pack_rows([len(ids) for ids, _ in encoded], max(row_len, max_len))
    width = max(sum(len(encoded[i][0]) for i in row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    # Padding gets positions 0, 1, … of its own: a segment of its own that nothing real attends to.
    positions = torch.arange(width).repeat(len(rows), 1)
    summary_row = torch.zeros(len(samples), dtype=torch.long)
    summary_index = torch.zeros(len(samples), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            ids, n_prompt = encoded[i]
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            labels[r, start + n_prompt : end] = torch.tensor(ids[n_prompt:])
            mask[r, start:end] = 1
            positions[r, start:end] = torch.arange(len(ids))
            summary_row[i], summary_index[i] = r, end - 1
            start = end
        positions[r, start:] = torch.arange(width - start)
    return Batch(
        input_ids, mask, labels, summary_index,
        targets=torch.tensor([s.target for s in samples]),
        gct_mask=torch.tensor([s.task in gct_tasks and s.target >= 0 for s in samples]),
        summary_row=summary_row, position_ids=positions, **segments(positions),
    )


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


def approximate_lengths(samples: Sequence[Sample]) -> list[int]:
    """Character counts: enough to group samples of similar token length, without tokenising."""
    return [len(s.prompt) + len(s.response) for s in samples]


class CollatedBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a stage's batch plan, tokenised and laid out: what a DataLoader worker builds."""

    def __init__(self, tokenizer, samples: Sequence[Sample], batches: Sequence[Sequence[int]], max_len: int,
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
