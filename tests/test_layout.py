"""The repository's layout rule: the pipeline's processes and ``shared`` never use ``devtools``.

``devtools/`` (``batchpipe dev``, the provider emulator, the local broker) is development
tooling; a production image could leave it out without ingest, the dispatcher or the poller
noticing. Checked twice: no import statement names it (also inside functions), and importing
every production module loads none of it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("services/ingest", "services/dispatcher", "services/poller", "shared")


def production_files() -> list[Path]:
    return sorted(path for folder in PRODUCTION for path in (ROOT / folder).rglob("*.py"))


def imported_names(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def test_no_production_module_imports_devtools() -> None:
    files = production_files()
    assert len(files) > 20  # the folders were found
    offenders = {
        str(path.relative_to(ROOT)): name
        for path in files
        for name in imported_names(path)
        if name.split(".")[:2] == ["batchpipe", "devtools"] or name.split(".")[0] == "devtools"
    }
    assert offenders == {}
    assert not [p for p in files if "batchpipe.devtools" in p.read_text()]  # importlib too


def test_importing_the_production_modules_loads_no_devtools() -> None:
    modules = [
        "batchpipe." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in production_files()
        if path.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('batchpipe.devtools')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
