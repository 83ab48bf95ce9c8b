"""Trained tokens/s of one LoRA training step: SDPA or varlen attention, plain or ``torch.compile``d layers.

    python eager/lab/bench_train_step.py [--base GGUF_OR_FOLDER] [--tokens 30000] [--steps 20] [--lora-dropout 0] \
        [--attention varlen] [--pack-len 2048] --json
    python eager/lab/bench_train_step.py --suite --random-weights --json     # every lever, one JSON line each

``--random-weights`` builds the backbone from its config alone (the step's speed does not depend on
the weights), so a GPU machine needs no copy of the model: point ``--base`` at a folder holding only
SmolLM2's ``config.json``. ``--suite`` measures the levers one after another (attention, row length,
LoRA dropout, compiling, batch size), each line printed as soon as it is measured, and checks the
varlen kernel's loss against SDPA's on the same batch.

Synthetic packed batches shaped like the trainer's (rows of 2048 tokens holding ~118-token samples,
position ids restarting per sample, the loss on each sample's last 6 tokens), LoRA r=8 on every
projection, bf16 autocast and fused AdamW on CUDA, the same ``compute_loss`` the trainer calls.
No data needed: it isolates the model step from collation and validation.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch

from eager.backbone import load_backbone, pretrained_args
from eager.model.assembly import attach_lora
from eager.model.lora import LoraSettings
from eager.train.attention import TrainingAttention
from eager.train.batching import IGNORE, Batch, segments
from eager.train.objective import compute_loss
from eager.train.trainer import CompiledLayers


@dataclass(frozen=True)
class StepSetup:
    attention: str = "sdpa"
    pack_len: int = 2048
    lora_dropout: float = LoraSettings().dropout
    compile: bool = False
    batch_scale: int = 1  # tokens per step: this many times --tokens


# What --suite measures, in order of what each costs (compiling is ~70 s a setup): the plain step as
# the trainer ran it, then one lever at a time, then the levers together.
SUITE = (
    StepSetup(),
    StepSetup(pack_len=512),
    StepSetup(attention="varlen"),
    StepSetup(attention="varlen", lora_dropout=0.0),
    StepSetup(attention="varlen", lora_dropout=0.0, compile=True),
    StepSetup(attention="varlen", lora_dropout=0.0, compile=True, batch_scale=2),
    StepSetup(compile=True),
)


def packed_batch(vocab: int, tokens: int, sample_len: int, row_len: int, labelled: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    per_row = row_len // sample_len
    rows = max(1, tokens // (per_row * sample_len))
    width = per_row * sample_len
    input_ids = torch.randint(0, vocab, (rows, width), generator=g)
    positions = torch.arange(sample_len).repeat(rows, per_row)
    labels = torch.full_like(input_ids, IGNORE)
    ends = torch.arange(sample_len, width + 1, sample_len)
    for end in ends.tolist():
        labels[:, end - labelled : end] = input_ids[:, end - labelled : end]
    n = rows * per_row
    return Batch(input_ids, torch.ones_like(input_ids), labels, summary_index=(ends - 1).repeat(rows),
                 targets=torch.full((n,), -1), gct_mask=torch.zeros(n, dtype=torch.bool),
                 summary_row=torch.arange(rows).repeat_interleave(per_row), position_ids=positions,
                 **segments(positions))


def load_model(base: str | None, random_weights: bool):
    if not random_weights:
        return load_backbone(base)[0]
    from transformers import AutoConfig, AutoModelForCausalLM

    folder, kwargs = pretrained_args(base)
    config = AutoConfig.from_pretrained(folder, **kwargs)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def timed_steps(model, params, batch: Batch, steps: int, warmup: int, device) -> tuple[float, float]:
    """(seconds per step, the first step's loss: dropout on, so not comparable across setups)."""
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    first = None
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            started = time.perf_counter()
        with autocast:
            loss = compute_loss(model, batch)["loss"]
        if first is None:
            first = loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    sync()
    return (time.perf_counter() - started) / steps, first


def measure(base_model, setup: StepSetup, tokens: int, steps: int, warmup: int, device) -> dict:
    """One setup on a fresh LoRA over the same base weights (so first-step losses compare across setups)."""
    model = attach_lora(base_model, LoraSettings(dropout=setup.lora_dropout))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B so the LoRA branch (and its dropout) changes the loss
            torch.nn.init.normal_(p, std=1e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = packed_batch(model.config.vocab_size, tokens * setup.batch_scale, 118, setup.pack_len, 6, seed=0).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = {**asdict(setup), "tokens_per_step": int(batch.input_ids.numel())}
    compiled = CompiledLayers(model, setup.compile)
    with TrainingAttention(model, setup.attention), torch.no_grad(), torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model.eval()  # no dropout: the same loss for every setup, up to the kernels' rounding
        result["loss_check"] = round(compute_loss(model, batch)["loss"].item(), 5)
        model.train()
    with compiled, TrainingAttention(model, setup.attention):
        if setup.compile:
            started = time.perf_counter()
            timed_steps(model, params, batch, 1, 1, device)  # compiles (forward and backward)
            result["compile_s"] = round(time.perf_counter() - started, 1)
        seconds, first_loss = timed_steps(model, params, batch, steps, warmup, device)
    result.update(s_per_step=round(seconds, 4), tokens_per_s=round(batch.input_ids.numel() / seconds),
                  first_loss=round(first_loss, 5))
    if device.type == "cuda":
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    model.unload()  # the base model back without LoRA layers, for the next setup
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="backbone (default: $EAGER_BASE_GGUF / the packaged GGUF); with "
                        "--random-weights a folder with only config.json will do")
    parser.add_argument("--random-weights", action="store_true", help="the backbone's architecture, random weights")
    parser.add_argument("--tokens", type=int, default=30_000, help="tokens per step (the multitask-short batch: ~30k)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lora-dropout", type=float, default=LoraSettings().dropout,
                        help="the recipes' 0.05 by default; 0 makes each LoRA branch's dropout an identity")
    parser.add_argument("--attention", choices=("sdpa", "varlen"), default="sdpa")
    parser.add_argument("--pack-len", type=int, default=2048)
    parser.add_argument("--compile", action="store_true", help="also time the compiled layers")
    parser.add_argument("--suite", action="store_true", help="measure every setup of SUITE instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    base_model = torch.nn.Module.to(load_model(args.base, args.random_weights), device)
    import transformers

    header = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__,
              "random_weights": args.random_weights, "steps": args.steps}
    print(json.dumps(header) if args.json else header, flush=True)
    one = StepSetup(args.attention, args.pack_len, args.lora_dropout)
    setups = SUITE if args.suite else (one, *([StepSetup(**{**asdict(one), "compile": True})] if args.compile else []))
    for setup in setups:
        try:
            result = measure(base_model, setup, args.tokens, args.steps, args.warmup, device)
        except Exception as error:  # noqa: BLE001 - one failing setup (a kernel this torch lacks) must not cost the others
            result = {**asdict(setup), "error": f"{type(error).__name__}: {error}"[:500]}
        print(json.dumps(result) if args.json else result, flush=True)


if __name__ == "__main__":
    main()
