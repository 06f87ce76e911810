"""The import graph follows the data path: config is the bottom layer (imports nothing else of
syncwatch) and the collector plug-ins import only the config layer and the collector base."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _syncwatch_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("syncwatch"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("syncwatch"))
    return found


def test_config_imports_nothing_else_of_syncwatch():
    for path in (ROOT / "exporter" / "config").glob("*.py"):
        outside = {m for m in _syncwatch_imports(path) if not m.startswith("syncwatch.config")}
        assert not outside, f"{path.name} imports {outside}"


def test_collectors_import_only_config_and_their_own_package():
    for path in (ROOT / "collectors").glob("*.py"):
        outside = {
            m for m in _syncwatch_imports(path) if not m.startswith(("syncwatch.config", "syncwatch.collectors"))
        }
        assert not outside, f"collectors/{path.name} imports {outside}"


def test_nothing_imports_the_old_top_level_names():
    for folder in ("exporter", "collectors", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                assert not any(
                    n in ("exporter", "collectors") or n.startswith(("exporter.", "collectors.")) for n in names
                ), path
