"""Trained tokens/s of one LoRA training step, plain against ``torch.compile``d decoder layers.

    python scripts/bench_train_step.py [--base GGUF_OR_FOLDER] [--tokens 30000] [--steps 20] [--lora-dropout 0] --json

Synthetic packed batches shaped like the trainer's (rows of 2048 tokens holding ~118-token samples,
position ids restarting per sample, the loss on each sample's last 6 tokens), LoRA r=8 on every
projection, bf16 autocast and fused AdamW on CUDA, the same ``compute_loss`` the trainer calls.
No data needed: it isolates the model step from collation and validation.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from eager.llm.backbone import load_backbone
from eager.llm.batching import IGNORE, Batch
from eager.llm.objective import compute_loss
from eager.llm.recipes import LoraSettings
from eager.llm.setup import attach_lora
from eager.llm.train import CompiledLayers


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
                 summary_row=torch.arange(rows).repeat_interleave(per_row), position_ids=positions)


def timed_steps(model, params, batch: Batch, steps: int, warmup: int, device) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            started = time.perf_counter()
        with autocast:
            loss = compute_loss(model, batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    sync()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="backbone (default: $EAGER_BASE_GGUF / the packaged GGUF)")
    parser.add_argument("--tokens", type=int, default=30_000, help="tokens per step (the gpu-lease batch: ~30k)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--lora-dropout", type=float, default=LoraSettings().dropout,
                        help="the recipes' 0.05 by default; 0 makes each LoRA branch's dropout an identity")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    model, _ = load_backbone(args.base)
    model = attach_lora(torch.nn.Module.to(model, device), LoraSettings(dropout=args.lora_dropout))
    params = [p for p in model.parameters() if p.requires_grad]
    batch = packed_batch(model.config.vocab_size, args.tokens, 118, 2048, 6, seed=0).to(device)
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "tokens_per_step": int(batch.input_ids.numel()), "steps": args.steps, "lora_dropout": args.lora_dropout}
    plain = timed_steps(model, params, batch, args.steps, args.warmup, device)
    report["plain"] = {"s_per_step": round(plain, 4), "tokens_per_s": round(batch.input_ids.numel() / plain)}
    if device.type == "cuda":
        report["plain"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(json.dumps(report) if args.json else report, flush=True)  # in case compiling runs out of time
    if not args.no_compile:
        compiled = CompiledLayers(model, True)
        with compiled:
            started = time.perf_counter()
            timed_steps(model, params, batch, 1, 1, device)  # compiles (forward and backward)
            compile_s = time.perf_counter() - started
            fast = timed_steps(model, params, batch, args.steps, args.warmup, device)
        report["compiled"] = {"s_per_step": round(fast, 4), "tokens_per_s": round(batch.input_ids.numel() / fast),
                              "compile_s": round(compile_s, 1), "speedup": round(plain / fast, 2)}
    print(json.dumps(report) if args.json else report)


if __name__ == "__main__":
    main()
