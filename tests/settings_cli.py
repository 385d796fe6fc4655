"""`cauce serve` refusing bad settings at start-up, in tests (exit 2, one line, no
traceback). The `toml` fixture (settings from a `cauce.toml`) is in `tests/conftest.py`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def serve_refusal(directory: Path, **env: str) -> str:
    """Run `cauce serve` in `directory` (its `cauce.toml`, if any) with no CAUCE_*
    variables but `env`; check it stops at start-up with exit 2 and one line, no
    traceback, and return that line."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    environment.update(env, COLUMNS="500")
    proc = subprocess.run(
        [sys.executable, "-m", "cauce", "serve"],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]
