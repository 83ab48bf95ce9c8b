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


def test_import_contracts_hold(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_every_module_of_the_package_sits_in_a_layer():
    """A new folder or top-level module cannot escape the contract by being left out of it."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {part.strip() for layer in layers for part in layer.split("|")}
    modules = {f"eager.{m.name}" for m in pkgutil.iter_modules(eager.__path__)}
    assert modules - named == set(), "add these to a layer in pyproject.toml"


def test_an_upward_import_breaks_the_contract(tmp_path, monkeypatch):
    """The checker sees an upward import when one is written (a low layer reaching a higher one)."""
    from importlinter.cli import lint_imports

    package = tmp_path / "pkg"
    for name, text in {"__init__.py": "", "low.py": "import pkg.high\n", "high.py": ""}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_package = "pkg"\n[[tool.importlinter.contracts]]\n'
                      'name = "down"\ntype = "layers"\nlayers = ["pkg.high", "pkg.low"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint_imports(config_filename=str(config), no_cache=True) == 1


@pytest.mark.parametrize("module", ["eager.demo.service", "eager.demo.views"])
def test_the_demo_does_not_load_training_code(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith(('eager.train', 'eager.lab'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
