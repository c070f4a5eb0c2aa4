"""Every hostile capture of the tcpdump suite (`*oobr*`, `*overflow*`, `*invalid*`, `*asan*`,
truncated files) replays to exit 0, or exit 2 with one line when the file itself is unusable:
never a traceback, and every packet is accounted for in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from mermin.errors import CaptureError
from mermin.replay import ReplaySettings, open_capture, replay_capture

PCAPS = Path(__file__).resolve().parents[3] / "shared" / "pcaps" / "tcpdump"
HOSTILE = ("oobr", "overflow", "invalid", "asan", "trunc")

pytestmark = [pytest.mark.privileged, pytest.mark.usefixtures("require_root", "bpf_object")]


def test_hostile_captures_never_crash():
    files = sorted(p for p in PCAPS.glob("*.pcap*") if any(h in p.name for h in HOSTILE))
    assert len(files) > 100, f"{PCAPS}: hostile captures missing"
    replayed = rejected = 0
    for path in files:
        try:
            cap = open_capture(path)
        except CaptureError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            rejected += 1
            continue
        with cap:
            result = replay_capture(cap, ReplaySettings(), lambda reports: None)
        run = result.run
        assert run.ok + run.damaged + run.linktype + run.short + run.rejected == result.packets
        assert result.kernel["seen"] == run.ok
        replayed += 1
    assert replayed > 50 and rejected > 0
