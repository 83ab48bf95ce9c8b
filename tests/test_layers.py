"""The package's layers only point down: import-linter's contracts in pyproject.toml hold."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import pytest

import eager

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _lint_imports(config: Path, cwd: Path, extra_path: Path | None = None) -> int:
    """import-linter's exit status, run in its own process: it reconfigures logging (disabling the
    loggers that exist), which would silence the other tests' log captures."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True).returncode


def test_import_contracts_hold():
    assert _lint_imports(ROOT / "pyproject.toml", ROOT) == 0


def test_every_module_of_the_package_sits_in_a_layer():
    """A new folder or top-level module cannot escape the contract by being left out of it."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    modules = {f"eager.{m.name}" for m in pkgutil.iter_modules(eager.__path__)}
    assert modules - named == set(), "add these to a layer in pyproject.toml"


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The checker sees an upward import when one is written (a low layer reaching a higher one)."""
    package = tmp_path / "pkg"
    for name, text in {"__init__.py": "", "low.py": "import pkg.high\n", "high.py": ""}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "pkg"\n[[tool.importlinter.contracts]]\n'
                      'name = "down"\ntype = "layers"\nlayers = ["pkg.high", "pkg.low"]\n')
    assert _lint_imports(config, tmp_path, extra_path=tmp_path) == 1


@pytest.mark.parametrize("module", ["eager.demo.service", "eager.demo.views"])
def test_the_demo_does_not_load_training_code(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith(('eager.train', 'eager.lab'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
