"""The package's layers (pg_imgembed/__init__.py): imports only go down, and only the layers that
talk to the database write SQL. Read from the source with ``ast``; no database needed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pg_imgembed"
# Rank of each layer: a module imports from its own folder or from a lower rank. client/ and
# backend/ share the top: the client runs outside PostgreSQL, the backend only inside it.
RANKS = {"": 0, "onnx": 1, "image": 2, "text": 3, "store": 4, "serving": 5, "backend": 6, "client": 6}
# The released install scripts' entry point (sql/released/ is frozen): it only re-exports
# backend.server.start.
ENTRY = "server"
QUERYING = {"store", "backend", "client"}
# Calls that send SQL to a server (plpy, the Database protocol, psycopg) ...
QUERY_CALLS = {"execute", "prepare", "rows", "cursor", "executemany", "copy"}
# ... and string literals that read as SQL statements.
SQL_TEXT = re.compile(r"^\s*(SELECT\s+\S|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS|CREATE\s+(OR\s+REPLACE\s+)?"
                      r"(TABLE|FUNCTION|TRIGGER|INDEX)|ALTER\s+TABLE|DROP\s+(TABLE|FUNCTION|TRIGGER))", re.IGNORECASE)


def modules() -> list[tuple[str, Path]]:
    return sorted((".".join(p.relative_to(PACKAGE).with_suffix("").parts), p) for p in PACKAGE.rglob("*.py"))


def layer(module: str) -> str:
    """The folder a module lives in ("" for the ground floor beside __init__)."""
    parts = module.split(".")
    return parts[0] if len(parts) > 1 and parts[0] in RANKS else ""


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module under pg_imgembed) for each import of the package in a module's source."""
    package = module.split(".")[:-1]  # a module's package; an __init__'s is its own folder
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "pg_imgembed":
                target = node.module.partition(".")[2]
            else:
                continue
            names = [target] if node.module else []
            names += [f"{target}.{alias.name}".strip(".") for alias in node.names if not node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[2]) for alias in node.names
                      if alias.name.split(".")[0] == "pg_imgembed"]
    return found


def imported_layer(target: str) -> str:
    first = target.split(".")[0]
    return first if first in RANKS and first else ""


@pytest.mark.parametrize("module, path", modules(), ids=[m for m, _ in modules()])
def test_imports_only_go_down(module, path):
    if module == ENTRY:
        assert {t for _, t in imported(module, path)} == {"backend.server"}
        return
    own = layer(module)
    upward = [f"line {line}: {target} ({imported_layer(target) or 'ground floor'})"
              for line, target in imported(module, path)
              if imported_layer(target) != own and RANKS[imported_layer(target)] >= RANKS[own]]
    assert not upward, f"{module} ({own or 'ground floor'}) imports from its own rank or above: {upward}"


@pytest.mark.parametrize("module, path", [(m, p) for m, p in modules() if layer(m) not in QUERYING],
                         ids=[m for m, _ in modules() if layer(m) not in QUERYING])
def test_only_store_backend_and_client_write_sql(module, path):
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in QUERY_CALLS:
            found.append(f"line {node.lineno}: .{node.func.attr}()")
        elif isinstance(node, ast.Name | ast.arg) and getattr(node, "id", getattr(node, "arg", None)) == "plpy":
            found.append(f"line {node.lineno}: plpy")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.match(node.value):
            found.append(f"line {node.lineno}: SQL text {node.value.strip()[:40]!r}")
    assert not found, f"{module} is outside store/, backend/ and client/ but queries: {found}"


def test_the_layers_are_the_package_docstring_s():
    doc = (PACKAGE / "__init__.py").read_text()
    for name in RANKS:
        assert not name or f"``{name}/``" in doc
