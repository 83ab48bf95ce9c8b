"""Where NF4 loses ranking quality, and which 4-bit setup loses least, against the fp32 model.

    EAGER_DATA_ROOT=../shared/data python eager/lab/nf4_diagnostic.py 200 [SETUP ...] [--out FILE.json]

Runs the first N Beauty test users through 20-beam search with `checkpoints/beauty/full` in fp32
and in each named setup (all by default), and prints for each: Recall/NDCG@10, how far its ranking
moves from fp32's (top-1 agreement, mean top-10 overlap), the Linear weights' bytes and the time.
The setups:

  served-2026-11-26      what serving did until 2026-11-27: merged model stored in bf16, Linears NF4
                         (block 64, fp32 compute), everything else left in bf16
  nf4-bf16-storage       the same, but the rest (embeddings, norms, head, residual stream) in fp32
  nf4                    quantised from the fp32 merged model, block 64
  nf4-block32            block 32
  nf4-keep-attention     q/k/v/o projections left in fp32, the MLPs NF4
  nf4-keep-qk            only the query and key projections left in fp32
  nf4-keep-vo            only the value and output projections left in fp32
  nf4-keep-attention-block32   attention in fp32, the MLPs NF4 with block 32
  nf4-keep-mlp           the MLPs left in fp32, attention NF4
  nf4-keep-ends          the first and last decoder layers left in fp32
  nf4-base+delta         the base's Linears NF4, the fine-tuning deltas added back exactly in fp32
  int4-mlp               the MLPs in int4 on torch's CPU int4 kernel (group 32), attention fp32
  int4                   every transformer Linear in int4 (group 64)
  bf16-weights           no 4-bit at all: every weight rounded to bf16, computed in fp32 (how much a
                         perturbation far smaller than NF4's moves this checkpoint's rankings)
"""
import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from eager.backbone import load_backbone
from eager.data import load_dataset
from eager.decoding.evaluate import evaluate_checkpoint
from eager.decoding.loaded import LoadedModel
from eager.decoding.trie import CodeTrie
from eager.eval.metrics import ranking_agreement
from eager.model.checkpoint import rebuild_merged
from eager.serve.quantize import Int4Linear, is_transformer_linear, quantize_nf4, to_serving_dtype

CHECKPOINT = Path("checkpoints/beauty/full")


class NF4PlusDelta(torch.nn.Module):
    def __init__(self, q, delta):
        super().__init__()
        self.q, self.delta = q, delta

    def forward(self, x):
        return self.q(x) + torch.nn.functional.linear(x, self.delta.to(x.dtype))


def transformer_linears(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if is_transformer_linear(m, model.config.vocab_size)}


def base_plus_delta(model, base_weights):
    """The merged model with its Linears reset to the base, quantised as served, plus the exact deltas."""
    deltas = {}
    for name, W in base_weights.items():
        weight = model.get_submodule(name).weight
        deltas[name] = weight.data.float() - W
        weight.data.copy_(W)
    quantize_nf4(model, torch.float32)
    for name, delta in deltas.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, NF4PlusDelta(model.get_submodule(name), delta))
    return model


def served_until_2026_11_26(model):
    """bf16 storage, NF4 Linears with fp32 compute, and (the old behaviour) the rest left in bf16."""
    model = quantize_nf4(torch.nn.Module.to(model, torch.bfloat16), torch.float32)
    for param in model.parameters():
        if param.dtype == torch.float32:  # the packed 4-bit weights are uint8
            param.data = param.data.to(torch.bfloat16)
    return model


def setups(merged, base_weights):
    last = merged.config.num_hidden_layers - 1
    fp32_nf4 = lambda **kw: quantize_nf4(copy.deepcopy(merged), torch.float32, **kw)  # noqa: E731
    return {
        "served-2026-11-26": lambda: served_until_2026_11_26(copy.deepcopy(merged)),
        "nf4-bf16-storage": lambda: quantize_nf4(torch.nn.Module.to(copy.deepcopy(merged), torch.bfloat16), torch.float32),
        "nf4": lambda: fp32_nf4(),
        "nf4-block32": lambda: fp32_nf4(blocksize=32),
        "nf4-keep-attention": lambda: fp32_nf4(keep=("self_attn.",)),
        "nf4-keep-qk": lambda: fp32_nf4(keep=("q_proj", "k_proj")),
        "nf4-keep-vo": lambda: fp32_nf4(keep=("v_proj", "o_proj")),
        "nf4-keep-attention-block32": lambda: fp32_nf4(keep=("self_attn.",), blocksize=32),
        "nf4-keep-mlp": lambda: fp32_nf4(keep=("mlp.",)),
        "nf4-keep-ends": lambda: fp32_nf4(keep=("layers.0.", f"layers.{last}.")),
        "nf4-base+delta": lambda: base_plus_delta(copy.deepcopy(merged), base_weights),
        "int4-mlp": lambda: to_serving_dtype(copy.deepcopy(merged), "int4-mlp", torch.float32),
        "int4": lambda: to_serving_dtype(copy.deepcopy(merged), "int4", torch.float32),
        "bf16-weights": lambda: torch.nn.Module.float(torch.nn.Module.to(copy.deepcopy(merged), torch.bfloat16)),
    }


def linear_bytes(model) -> int:
    """Bytes of the transformer Linears' weights as stored (packed 4-bit + absmax, or dense)."""
    total = 0
    for module in model.modules():
        if isinstance(module, Int4Linear):
            total += sum(b.numel() * b.element_size() for b in (module.packed, module.scale_zero))
    for module in transformer_linears(model).values():
        weight = module.weight
        total += weight.numel() * weight.element_size()
        state = getattr(weight, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("users", type=int)
    parser.add_argument("setups", nargs="*")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    args = parser.parse_args()
    checkpoint = args.checkpoint
    merged, tok, index, vocab, config = rebuild_merged(checkpoint)
    data = load_dataset(config["dataset"])
    merged = torch.nn.Module.float(merged).eval()
    base, _ = load_backbone()
    base_weights = {n: m.weight.data.float().clone() for n, m in transformer_linears(base).items()}
    del base
    r = [((merged.get_submodule(n).weight.data.float() - B).pow(2).mean().sqrt() / B.pow(2).mean().sqrt()).item()
         for n, B in base_weights.items()]
    print("median relative delta rms", round(sorted(r)[len(r) // 2], 4), "max", round(max(r), 4), flush=True)
    builders = {"fp32": lambda: copy.deepcopy(merged)} | setups(merged, base_weights)
    chosen = ["fp32"] + (args.setups or [name for name in builders if name != "fp32"])
    unknown = [name for name in chosen if name not in builders]
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; choose from {sorted(builders)}")
    work = Path(tempfile.mkdtemp(prefix="nf4diag-"))
    results, rankings = {}, {}
    for label in chosen:
        model = builders[label]().eval()
        loaded = LoadedModel(model, tok, index, vocab, CodeTrie(index, vocab), config, checkpoint)
        started = time.time()
        report = evaluate_checkpoint(loaded, data, "test", limit=args.users, out_dir=work / label)
        rankings[label] = [json.loads(line)["ranked"] for line in open(work / label / "predictions.jsonl")]
        row = {k: report[k] for k in ("recall@10", "ndcg@10")}
        row |= {"linear_MB": round(linear_bytes(model) / 2**20, 1), "seconds": round(time.time() - started)}
        if label != "fp32":
            agreement = ranking_agreement(rankings["fp32"], rankings[label], 10)
            row["top1_agree"] = round(agreement["same_top1"] * agreement["users"])
            row["top10_overlap"] = round(agreement["overlap@10"] * 10, 2)
        results[label] = row
        print(label, row, flush=True)
        del model, loaded
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": str(checkpoint), "split": "test", "users": args.users,
                                        "beams": 20, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
