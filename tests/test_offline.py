"""Importing eager keeps the Hugging Face hub offline: nothing is fetched at run time."""

import os
import subprocess
import sys

PROBE = "import eager, peft, os; print(os.environ['HF_HUB_OFFLINE'])"


def _import_eager_then_peft(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=clean | env, timeout=300)


def test_the_hub_is_offline_unless_the_user_says_otherwise():
    quiet = _import_eager_then_peft()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "1"
    # bitsandbytes' hub kernel (asked for on AVX512-BF16 CPUs, such as this project's machines) is
    # neither fetched nor warned about: the fallback's warning reads like a broken install.
    assert "kernels-community" not in quiet.stderr
    chosen = _import_eager_then_peft(HF_HUB_OFFLINE="0")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == "0"
