"""The rewriting engine's public names, and that it stays pure (the standard library's text tools only)."""

from __future__ import annotations

import ast
from pathlib import Path

import edgecache.cdn

ENGINE = ("urls.py", "html.py", "css.py", "jsontext.py", "link.py", "rewriter.py")
PURE = {
    "__future__",
    "re",
    "json",
    "dataclasses",
    "functools",
    "collections.abc",
    "html.entities",
    "urllib.parse",
}


def test_public_names_are_exported_sorted() -> None:
    assert edgecache.cdn.__all__ == sorted(edgecache.cdn.__all__)
    assert {"AssetRewriter", "CdnConfig"} <= set(edgecache.cdn.__all__)
    for name in edgecache.cdn.__all__:
        assert hasattr(edgecache.cdn, name), name


def test_engine_modules_import_no_io() -> None:
    # no asyncio, sockets, HTTP clients, clocks or files: the middleware and the proxy do the I/O
    package = Path(edgecache.cdn.__file__).parent
    for module in ENGINE:
        tree = ast.parse((package / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must be another engine module
                    assert f"{node.module}.py" in ENGINE, (module, node.module)
                    continue
                names = {node.module or ""}
            else:
                continue
            assert names <= PURE, (module, names - PURE)
