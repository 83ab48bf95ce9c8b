"""Hugging Face generate with a prefix_allowed_tokens_fn over the trie: the authors' way to decode, kept as the reference the engine is checked and benchmarked against."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from eager.decoding.trie import CodeTrie, Recommendation
from eager.index.item_index import ItemIndex
from eager.model.prompts import DEFAULT_PROMPT_STYLE, seqrec_prompt


def generation_config(tokenizer, levels: int, beams: int, k: int) -> GenerationConfig:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return GenerationConfig(
        max_new_tokens=levels, min_new_tokens=levels, num_beams=beams, num_return_sequences=min(k, beams),
        do_sample=False, temperature=None, top_k=None, top_p=None, length_penalty=0.0, early_stopping=True,
        output_scores=True, return_dict_in_generate=True, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
    )


@torch.no_grad()
def recommend_batch(
    model, tokenizer, index: ItemIndex, trie: CodeTrie, histories: Sequence[Sequence[str]], k: int = 10, beams: int = 20,
    prompt_style: str = DEFAULT_PROMPT_STYLE,
) -> list[list[Recommendation]]:
    """Top-``k`` items per history (lists of item keys), best first."""
    if k > beams:
        raise ValueError(f"k={k} needs at least as many beams (got {beams})")
    prompts = [seqrec_prompt(index, h, prompt_style) for h in histories]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generated tokens must all start at the same column
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = {name: t.to(model.device) for name, t in enc.items()}
    width = enc["input_ids"].shape[1]
    out = model.generate(
        **enc, generation_config=generation_config(tokenizer, index.levels, beams, k),
        prefix_allowed_tokens_fn=lambda _, ids: trie.allowed_token_ids(ids[width:].tolist()),
    )
    per_user = min(k, beams)
    codes = out.sequences[:, width : width + index.levels].cpu()
    scores = out.sequences_scores.float().cpu()
    results: list[list[Recommendation]] = []
    for user in range(len(histories)):
        ranked = []
        for row in range(user * per_user, (user + 1) * per_user):
            values = [trie.value_of_token.get(int(t), -1) for t in codes[row]]
            key = index.key_of_code(values)
            if key is not None:
                ranked.append(Recommendation(key, index.text_of(key), float(scores[row])))
        results.append(ranked)
    return results
