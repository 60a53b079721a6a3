"""The repository's layering: the pipeline's processes and ``shared`` never use ``devtools``,
and ``devtools`` never uses ``batchpipe.services``.

``devtools/`` (``batchpipe dev``, the provider emulator, the local broker) is development
tooling; a production image could leave it out without ingest, the dispatcher or the poller
noticing. The ``batchpipe`` command (``services/cli``) registers the dev tools, never the other
way round, so there is no import cycle. Each rule is checked twice: no import statement breaks
it (also inside functions), and importing the modules loads nothing it forbids.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("services/ingest", "services/dispatcher", "services/poller", "shared")


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def production_files() -> list[Path]:
    return python_files(*PRODUCTION)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("batchpipe", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def loaded_after_importing(modules: list[str], prefix: str) -> list[str]:
    """The modules under ``prefix`` that importing ``modules`` (in a fresh interpreter) loads."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({prefix!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = ast.literal_eval(done.stdout.strip())
    return loaded


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
    modules = [module_name(path) for path in production_files() if path.name != "__main__.py"]
    assert loaded_after_importing(modules, "batchpipe.devtools") == []


def test_devtools_never_imports_the_services_or_the_cli() -> None:
    files = python_files("devtools")
    assert len(files) > 10
    offenders = {
        str(path.relative_to(ROOT)): name
        for path in files
        for name in imported_names(path)
        if name.split(".")[:2] == ["batchpipe", "services"] or name.split(".")[0] == "services"
    }
    assert offenders == {}
    modules = [module_name(path) for path in files if path.name != "__main__.py"]
    assert loaded_after_importing(modules, "batchpipe.services") == []
