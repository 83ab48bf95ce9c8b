"""Write docs/measurements/README.md: each raw file, what it holds, and which pages cite it.

    python -m eager.lab.measurements_index

"What it holds" is the file's own ``what`` (or ``description``) field where it has one, else its
dataset, split and model; "cited in" lists the pages that name the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = ROOT / "docs" / "measurements"
PAGES = ["README.md", "docs/results.md", "docs/protocol.md", "docs/training.md", "docs/serving.md",
         "docs/item-codes.md", "docs/demo.md", "eager/lab/levers.md"]
HEADER = """# Raw measurements

Every number quoted in the README, `docs/` and the lab notes comes from a file here, written by the
command named beside it where it is quoted. This index says what each file holds and which pages
cite it (`python -m eager.lab.measurements_index` rewrites it). File names carry the dataset, the
machine (`cpu`, `h100`, `h200`) and the date measured. `ranks/` holds per-user target ranks of test
and validation runs (`eager lab ranks`), small enough to commit and pair again later without the
data (`tests/lab/test_committed_ranks.py` checks each against the prepared data).

| file | what it holds | cited in |
|---|---|---|
"""


def describe(path: Path) -> str:
    try:
        if path.suffix == ".json":
            record = json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            record = json.loads(path.read_text().splitlines()[0])
        else:
            return "—"
    except (ValueError, IndexError):
        return "—"
    if not isinstance(record, dict):
        return "—"
    what = record.get("what") or record.get("description") or ""
    if not what and "dataset" in record:
        what = " ".join(str(record.get(k, "")) for k in ("dataset", "split", "model")).strip()
    if not what and "name" in record and "curve" in record:
        what = f"{record.get('dataset', '')} SASRec grid trials on validation (one line each)"
    what = re.sub(r"\s+", " ", str(what)).replace("|", "/")
    return what[:217] + "…" if len(what) > 220 else what or "—"


def main() -> None:
    texts = {page: (ROOT / page).read_text() for page in PAGES if (ROOT / page).exists()}
    rows = []
    for path in sorted(p for p in MEASUREMENTS.rglob("*") if p.is_file() and p.name != "README.md"):
        cited = [f"[{Path(page).name}]({'../../' if not page.startswith('docs/') else '../'}"
                 f"{page if not page.startswith('docs/') else page[len('docs/'):]})"
                 for page, text in texts.items() if path.name in text]
        rows.append(f"| `{path.relative_to(MEASUREMENTS)}` | {describe(path)} | {', '.join(cited) or '—'} |")
    (MEASUREMENTS / "README.md").write_text(HEADER + "\n".join(rows) + "\n")
    print(f"{len(rows)} files indexed")


if __name__ == "__main__":
    main()
