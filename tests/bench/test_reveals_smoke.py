"""bench.reveals on a real Anvil and IPFS daemon, with a few identities: every identity reveals, and the figures
it writes count the work of each reveal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.reveals import main


@pytest.mark.slow
def test_every_identity_reveals_and_its_costs_are_counted(tmp_path: Path) -> None:
    out = tmp_path / "reveals.json"
    assert main(["--identities", "3", "--workers", "3", "--rounds", "1", "--results", str(out)]) == 0
    result = json.loads(out.read_text())
    (only,) = result["rounds"]
    assert only["revealed"] == 3 and 1 <= only["reveal_span_blocks"] <= 100
    assert only["ipfs_calls_per_reveal"] == {"add": 1.0}  # the add pins: no second request
    assert only["chain_calls_per_reveal"]["eth_sendRawTransaction"] == 1.0
    assert set(only["cpu_ms_per_reveal"]) == {"population", "ipfs", "chain"}
