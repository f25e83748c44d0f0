"""The import contract (issue 17): layers import only downwards; image analysis and the
transport simulator are independent. The contract lives in ``.importlinter`` at the top of
the project and is checked here by import-linter on the source as installed.

The installed package maps ``insitu.drivers`` -> ``drivers/``, ``insitu.gui`` -> ``gui/`` and
``insitu.analysis`` -> ``analysis/`` (pyproject ``package-dir``). import-linter walks the
package directory, so the test assembles that tree from the source files in a temporary
folder and lints it there.
"""
import shutil
import subprocess
import sys
from pathlib import Path


try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def assemble_package(dest: Path) -> Path:
    """Copy the ``.py`` files of every mapped package into ``dest`` in their installed layout."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, src in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*name.split("."))
        shutil.copytree(ROOT / src, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.yaml"))
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), str(ROOT / ".importlinter"), "--no-cache"],
                          cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_layer_contract_is_kept(tmp_path):
    result = lint(assemble_package(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_contract_catches_an_upward_import(tmp_path):
    """The check has teeth: a driver importing the engine breaks the layers contract."""
    tree = assemble_package(tmp_path)
    scpi = tree / "insitu" / "drivers" / "scpi.py"
    scpi.write_text(scpi.read_text() + "\nfrom insitu.control import engine  # upward\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "insitu.drivers.scpi -> insitu.control.engine" in result.stdout
