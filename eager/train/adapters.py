"""LoRA adapters and the trainable code-token rows of a training stage."""

from __future__ import annotations

import torch


def train_only_code_rows(model) -> torch.nn.Parameter:
    """Make the (tied) embedding trainable; the trainer masks the base rows' gradients
    (:class:`eager.train.sharding.CodeRowGradients`), so only the code-token rows move."""
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(True)
    return weight


def lora_state(model) -> dict[str, torch.Tensor]:
    """The LoRA A/B matrices of a peft model, with peft's own key names."""
    from peft import get_peft_model_state_dict

    from eager.train.sharding import full_state

    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return full_state({k: v for k, v in state.items() if "lora_" in k})  # whole tensors, also under FSDP
