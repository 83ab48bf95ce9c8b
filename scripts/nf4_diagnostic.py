"""Where NF4 loses quality: quantising the merged model, or the base with the fine-tuning deltas kept exact.

    EAGER_DATA_ROOT=../shared/data python scripts/nf4_diagnostic.py 200   # first 200 Beauty test users

Prints the deltas' size relative to the weights, Recall/NDCG@10 of fp32, NF4 of the merged model and
NF4 base + exact fp32 deltas, and how far each NF4 ranking moves from fp32's (top-1, top-10 overlap).
"""
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from eager.data import load_dataset
from eager.llm.backbone import load_backbone
from eager.llm.checkpoint import LoadedModel, rebuild_merged, quantize_nf4
from eager.llm.decode import CodeTrie
from eager.llm.pipeline import evaluate_checkpoint

ckpt = Path("checkpoints/beauty/full")
limit = int(sys.argv[1])
data = load_dataset("beauty")
merged, tok, index, vocab, config = rebuild_merged(ckpt)
merged = torch.nn.Module.float(merged).eval()
base, _ = load_backbone()
base_lin = {n: m.weight.data.float().clone() for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[0] != base.config.vocab_size}
del base

class NF4PlusDelta(torch.nn.Module):
    def __init__(self, q, delta):
        super().__init__()
        self.q, self.delta = q, delta

    def forward(self, x):
        return self.q(x) + torch.nn.functional.linear(x, self.delta.to(x.dtype))


def nf4_base_plus_delta(model):
    """The merged model with its Linears reset to the base, quantised as served, plus the exact deltas."""
    deltas = {}
    for name, W in base_lin.items():
        weight = model.get_submodule(name).weight
        deltas[name] = weight.data.float() - W
        weight.data.copy_(W)
    quantize_nf4(model, torch.float32)
    for name, delta in deltas.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, NF4PlusDelta(model.get_submodule(name), delta))
    return model


r = [((merged.get_submodule(n).weight.data.float() - B).pow(2).mean().sqrt() / B.pow(2).mean().sqrt()).item()
     for n, B in base_lin.items()]
print("median relative delta rms", sorted(r)[len(r) // 2], "max", max(r))
work = Path(tempfile.mkdtemp(prefix="nf4diag-"))

out = {}
for label, build in [("fp32", lambda: copy.deepcopy(merged)),
                     ("nf4 merged", lambda: quantize_nf4(copy.deepcopy(merged), torch.float32)),
                     ("nf4 base + fp32 delta", lambda: nf4_base_plus_delta(copy.deepcopy(merged)))]:
    m = build().eval()
    loaded = LoadedModel(m, tok, index, vocab, CodeTrie(index, vocab), config, ckpt)
    t = time.time()
    rep = evaluate_checkpoint(loaded, data, "test", limit=limit, out_dir=work / label.replace(" ", "_"))
    out[label] = {k: rep[k] for k in ("recall@10", "ndcg@10")} | {"s": round(time.time()-t)}
    print(label, out[label], flush=True)
preds = {}
for label in out:
    preds[label] = [json.loads(l) for l in open(work / label.replace(" ", "_") / "predictions.jsonl")]
for label in list(out)[1:]:
    a, b = preds["fp32"], preds[label]
    top1 = sum(x['ranked'][0] == y['ranked'][0] for x, y in zip(a, b))
    ov = sum(len(set(x['ranked'][:10]) & set(y['ranked'][:10])) for x, y in zip(a, b)) / len(a)
    print(label, "vs fp32: top1", top1, "/", len(a), "top10 overlap", round(ov, 2))
