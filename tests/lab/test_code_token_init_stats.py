"""eager/lab/code_token_init_stats.py on the real backbone, Scientific and the shipped checkpoint's index."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_init_report_places_each_start_where_its_recipe_says(shared_data):
    env = {**os.environ, "EAGER_DATA_ROOT": str(shared_data)}
    result = subprocess.run(
        [sys.executable, str(REPO / "eager" / "lab" / "code_token_init_stats.py"), "--dataset", "scientific",
         "--index", str(REPO / "checkpoints" / "scientific" / "wo_aat" / "index.json"), "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["levels"] == 4 and set(report["inits"]) == {"mean", "text", "mean+text"}
    mean_norm = report["mean_row_norm"]
    for level in report["inits"]["mean"]:
        assert level["codes"] == 256 and level["pairwise_cos_min"] > 0.9999
        assert abs(level["norm"] - mean_norm) < 1e-4
    # The "mean+text" rows stay near the mean row; the title rows do not (what lever 1 reads).
    for with_titles, centred in zip(report["inits"]["text"], report["inits"]["mean+text"]):
        assert with_titles["pairwise_cos_min"] < centred["pairwise_cos_min"] < 1
        assert with_titles["cos_to_mean_row"] < 0.5 < 0.95 < centred["cos_to_mean_row"]
        assert abs(centred["norm"] - mean_norm) < 0.1 * mean_norm
