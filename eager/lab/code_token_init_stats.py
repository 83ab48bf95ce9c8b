"""Where each code-token init puts the new embedding rows, before any training.

    EAGER_DATA_ROOT=../shared/data python eager/lab/code_token_init_stats.py --dataset scientific [--index FILE] [--json]

For every init in `eager.model.code_tokens.TOKEN_INITS` and every code level: the rows' mean norm,
their mean and lowest pairwise cosine, their mean cosine with the mean row of the backbone's
vocabulary, and the median norm of the backbone's own rows for scale. It reads the index the
training would use (the dataset's dual index under the artifacts root unless --index names one).
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

from eager.backbone import load_backbone
from eager.data import load_dataset
from eager.index.item_index import ItemIndex
from eager.model.code_tokens import TOKEN_INITS, add_code_tokens
from eager.model.variants import get_variant
from eager.train.pipeline import variant_index


def init_stats(rows: torch.Tensor, mean_row: torch.Tensor) -> dict:
    unit = torch.nn.functional.normalize(rows, dim=1)
    pairs = (unit @ unit.T)[~torch.eye(len(rows), dtype=torch.bool)]
    to_mean = unit @ torch.nn.functional.normalize(mean_row, dim=0)
    return {"codes": len(rows), "norm": rows.norm(dim=1).mean().item(), "pairwise_cos": pairs.mean().item(),
            "pairwise_cos_min": pairs.min().item(), "cos_to_mean_row": to_mean.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--index", help="an index.json (default: the dataset's dual index)")
    parser.add_argument("--base", help="GGUF file or HF folder (default: the packaged SmolLM2)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    index = ItemIndex.load(args.index) if args.index else variant_index(data, get_variant("full"), None)
    base, base_tokenizer = load_backbone(args.base)
    words = base.get_input_embeddings().weight.detach()
    mean_row = words.mean(0)
    report = {"dataset": data.name, "levels": index.levels, "backbone_row_norm_median": words.norm(dim=1).median().item(),
              "mean_row_norm": mean_row.norm().item(), "inits": {}}
    for init in TOKEN_INITS:
        # add_code_tokens grows the model and the tokenizer in place: each init gets its own copies.
        model, tokenizer = copy.deepcopy(base), copy.deepcopy(base_tokenizer)
        vocab = add_code_tokens(model, tokenizer, index, init, data)
        table = model.get_input_embeddings().weight.detach()
        report["inits"][init] = [init_stats(table[vocab.table[level][vocab.table[level] >= 0]], mean_row)
                                 for level in range(index.levels)]
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{data.name}: backbone rows' median norm {report['backbone_row_norm_median']:.3f}, "
          f"mean row's norm {report['mean_row_norm']:.3f}")
    for init, levels in report["inits"].items():
        for level, s in enumerate(levels):
            print(f"{init:>10} level {level}: {s['codes']} codes, norm {s['norm']:.3f}, pairwise cos "
                  f"{s['pairwise_cos']:.3f} (min {s['pairwise_cos_min']:.3f}), cos to mean row {s['cos_to_mean_row']:.3f}")


if __name__ == "__main__":
    main()
