"""Assemble a trainable model: backbone + code tokens + LoRA, and put stage weights back on load."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from eager.data.dataset import InteractionData
from eager.index.item_index import ItemIndex
from eager.model.code_tokens import CodeVocabulary, add_code_tokens
from eager.model.lora import LoraSettings


def first_code_row(model, vocab: CodeVocabulary) -> int:
    """Code tokens are appended after the base vocabulary, so they are one contiguous block."""
    ids = vocab.all_ids()
    start, end = int(ids.min()), int(ids.max()) + 1
    if end - start != len(ids) or end != model.get_input_embeddings().weight.shape[0]:
        raise RuntimeError("code tokens are expected to be the last, contiguous rows of the embedding table")
    return start


def prepare_backbone(model, tokenizer, index: ItemIndex, token_init: str, data: InteractionData | None):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = add_code_tokens(model, tokenizer, index, token_init, data)
    return vocab


def backbone_for_index(base, index: ItemIndex):
    """(model, tokenizer, vocab, first code row): the backbone with the index's code tokens added, rows
    at the mean (for a trained stage's rows to be written over)."""
    from eager.backbone import load_backbone

    model, tokenizer = load_backbone(base)
    vocab = prepare_backbone(model, tokenizer, index, "mean", None)
    return model, tokenizer, vocab, first_code_row(model, vocab)


def load_lora_and_merge(model, settings: LoraSettings, state: dict[str, torch.Tensor]):
    """Re-create a stage's LoRA on ``model``, load its weights and fold them into the base."""
    from peft import set_peft_model_state_dict

    peft_model = attach_lora(model, settings)
    result = set_peft_model_state_dict(peft_model, state)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise RuntimeError(f"checkpoint lacks LoRA weights such as {missing[0]}")
    return peft_model.merge_and_unload()


def merge_stage(model, first_row: int, settings: LoraSettings, lora: dict[str, torch.Tensor],
                rows: torch.Tensor | None):
    """Fold one trained stage into ``model``: its LoRA merged into the base weights, its code rows set."""
    model = load_lora_and_merge(model, settings, {k: v.float() for k, v in lora.items()})
    if rows is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight[first_row:] = rows.float().to(model.device)
    return model


def attach_lora(model, settings: LoraSettings):
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.targets), bias="none", task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def causal_lm(model):
    """The underlying *ForCausalLM, through a peft wrapper if there is one (LoRA layers stay in)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
