"""`python -m tests.reliability.lean_cauce ARGS` runs the `cauce` CLI, minus scikit-learn.

Why: `cauce.leads.wiring` imports `STORE_PATH` from `cauce.leads.learned.store`, which
loads the whole learned-scoring package (scikit-learn, scipy, pandas, skops) in every
`cauce serve` and `cauce worker` start, although the scorer only needs it when a trained
model is active. That adds 4-9 s to each start on the 2 shared cores, which these tests
pay at every restart after a SIGKILL (see the report of issue 6 for the fix in src/).

The shim stands in for the two modules until something really uses them: the package
and its `store` module are placeholders whose attribute access (other than `STORE_PATH`,
read from the real source) imports the real modules, so a data directory with an active
model still scores with it. Everything else is the real CLI. Set
`CAUCE_RELIABILITY_PLAIN_CLI=1` in the tests' environment to run `python -m cauce` itself.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

PACKAGE = "cauce.leads.learned"
STORE = f"{PACKAGE}.store"


def _store_path(source: Path) -> Path:
    """STORE_PATH as the real module defines it (`Path(...) / ...`), without importing it."""
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "STORE_PATH" for t in node.targets
        ):
            expression = ast.Expression(node.value)
            # Cauce's own source, evaluated with no builtins and only `Path` in scope.
            names = {"__builtins__": {}, "Path": Path}
            value = eval(compile(expression, str(source), "eval"), names)
            if isinstance(value, Path):
                return value
    raise RuntimeError(f"STORE_PATH not found in {source}")


def _real(name: str, attribute: str) -> Any:
    """Drop the placeholders, import the real module and return its attribute."""
    if attribute.startswith("__"):
        # The import system probes dunders (`__path__`...): a placeholder has none.
        raise AttributeError(attribute)
    for stub in (STORE, PACKAGE):
        sys.modules.pop(stub, None)
    return getattr(importlib.import_module(name), attribute)


def install() -> None:
    """Put the placeholders in `sys.modules` (the real `cauce.leads` stays)."""
    spec = importlib.util.find_spec("cauce.leads")
    if spec is None or spec.origin is None:
        raise RuntimeError("cauce is not installed")
    directory = Path(spec.origin).parent / "learned"
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(directory)]
    package.__getattr__ = lambda name: _real(PACKAGE, name)  # type: ignore[method-assign]
    store = types.ModuleType(STORE)
    store.STORE_PATH = _store_path(directory / "store.py")  # type: ignore[attr-defined]
    store.__getattr__ = lambda name: _real(STORE, name)  # type: ignore[method-assign]
    sys.modules[PACKAGE] = package
    sys.modules[STORE] = store


if __name__ == "__main__":
    install()
    from cauce.cli import main

    sys.argv[0] = "cauce"
    main()
