"""The shape of the code stays as docs/architecture.md draws it: the import contract in
pyproject.toml (layers, no cycles) holds, the checker does catch a broken contract, and no
module grows past about 400 lines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 400

pytest.importorskip("importlinter", reason="import-linter is in the dev extra")


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))")
    return subprocess.run([sys.executable, "-c", code, str(config)], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_the_import_contract_holds():
    done = lint_imports(REPO / "pyproject.toml", REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "2 kept, 0 broken" in done.stdout


def test_the_checker_reports_an_upward_import_and_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("from pkg import high\n")  # a lower layer importing a higher one
    (package / "high.py").write_text("from pkg import low\n")
    config = tmp_path / "contracts.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "pkg"

        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        layers = ["pkg.high", "pkg.low"]

        [[tool.importlinter.contracts]]
        name = "cycles"
        type = "acyclic_siblings"
        ancestors = ["pkg"]
    """))
    done = lint_imports(config, tmp_path)
    assert done.returncode != 0
    assert "0 kept, 2 broken" in done.stdout, done.stdout


@pytest.mark.parametrize("folder", ["clipmg", "benchmarks"])
def test_no_module_is_over_about_400_lines(folder):
    lengths = {str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
               for path in (REPO / folder).rglob("*.py")}
    assert lengths
    assert {path: n for path, n in lengths.items() if n > MAX_MODULE_LINES} == {}
