"""The README's quick start module, as pasted: it defines its stand-in chain, and its tracker's
ticks reach Done (the real-worker run of a tracker is the integration tier's)."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any

import pytest

import tracking

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_module() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    found: list[str] = [block for block in blocks if block.startswith("# myapp/trackers.py")]
    assert len(found) == 1, "the README's quick start has no myapp/trackers.py block"
    return found[0]


def test_the_quick_start_tracker_polls_its_stand_in_chain_until_done(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("readme_quick_start")
    source = quick_start_module().replace(
        "tracking.Tracker):", 'tracking.Tracker):\n    kind = "readme-quick-start"', 1
    )
    exec(compile(source, str(README), "exec"), module.__dict__)
    cls: Any = module.TransactionTracker
    tracker = cls()
    tracker.transaction_id = "txn_readme"
    state = tracker.init("txn_readme")
    ticks = 0
    with pytest.raises(tracking.Done) as done:
        while ticks < 100:
            state = tracker.tick(state)
            ticks += 1
    assert done.value.state == {"confirmations": 12} and ticks == 11
