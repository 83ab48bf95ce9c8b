"""Two item indices of one catalogue side by side: collisions, code usage, and what the codes mean.

    EAGER_DATA_ROOT=../shared/data python -m eager.lab.codes_compare --dataset beauty \
        --old checkpoints/beauty/full/index.json --new artifacts/beauty/index/dual-minilm/index.json

For each: the stats of :meth:`ItemIndex.stats` and :func:`meaning_report` (title overlap of items
sharing the first semantic code, co-occurrence of items sharing the first behaviour code, each
against random pairs), and how many items keep their semantic half (the text side should not move
when only the behaviour embeddings are rebuilt). Prints one JSON object.
"""

from __future__ import annotations

import argparse

import numpy as np

from eager.data import load_dataset
from eager.index.item_index import ItemIndex
from eager.index.meaning import meaning_report
from eager.lab.report import emit
from eager.utils import machine_line, timestamp


def compare_indices(old: ItemIndex, new: ItemIndex, data) -> dict:
    rows_old = [old.row(k) for k in data.item_keys]
    rows_new = [new.row(k) for k in data.item_keys]
    semantic = [i for i, s in enumerate(old.level_sources) if s == "semantic"]
    same_text = (old.codes[rows_old][:, semantic] == new.codes[rows_new][:, semantic]).all(1) if semantic else None
    return {
        "old": {"stats": old.stats(), "meaning": meaning_report(old, data)},
        "new": {"stats": new.stats(), "meaning": meaning_report(new, data)},
        "items_with_the_same_semantic_half": None if same_text is None else int(np.sum(same_text)),
        "items": data.num_items,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, args.data_root)
    report = {"what": f"{data.name}: two item indices side by side (stats, meaning, semantic halves kept)",
              "dataset": data.name, "old_index": args.old, "new_index": args.new, "machine": machine_line(),
              "created": timestamp(), **compare_indices(ItemIndex.load(args.old), ItemIndex.load(args.new), data)}
    emit(report, args.out)


if __name__ == "__main__":
    main()
