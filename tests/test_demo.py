"""`cauce demo`, the README's first command: every lead Cauce accepted reaches the sandbox
CRM exactly once, through its faults, its rate limit and one short outage that comes
while deliveries run (from the CRM's first written record, whatever the machine's speed)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from cauce.demo import run_demo


async def test_the_demo_syncs_every_accepted_lead_once_through_an_outage(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    ok = await run_demo(count=3000, seed=7, data_dir=tmp_path / "demo", console=console)
    text = out.getvalue()
    assert ok, text
    summary = text[text.rindex("Cauce demo: summary") :]
    refused = re.search(r"refused in its outage\s*│\s*(\d+)", summary)
    assert refused is not None, summary
    assert int(refused.group(1)) > 0, "the CRM's outage came after the deliveries"
    assert re.search(r"OK: (\d+) leads synced, \1 contacts in the CRM, 0 stored twice", text)
