"""Tokenise samples into right-padded batches with response-only labels and the summary position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from eager.llm.tasks import Sample

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE outside the response (+ EOS)
    summary_index: torch.Tensor  # (B,) position of the EOS closing the response
    targets: torch.Tensor  # (B,) index row of the item the response names (-1: none)
    gct_mask: torch.Tensor  # (B,) samples that take part in GCT (seqrec)

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels,
                                               self.summary_index, self.targets, self.gct_mask)))

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


def bucketed_batches(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, bucket_batches: int = 50, seed: int = 0
) -> list[list[int]]:
    """Batches with little padding that are still random.

    ``order`` (an already shuffled list of sample ids) is cut into buckets of ``bucket_batches``
    batches; each bucket is sorted by length and split into batches; the batches are shuffled.
    """
    import random

    span = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def approximate_lengths(samples: Sequence[Sample]) -> list[int]:
    """Character counts: enough to group samples of similar token length, without tokenising."""
    return [len(s.prompt) + len(s.response) for s in samples]
