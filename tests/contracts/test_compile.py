"""The committed artifact is exactly what the committed source compiles to."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.compile import ARTIFACT_PATH, SOURCE_PATH, compile_artifact, load_artifact, render


@pytest.fixture(scope="session")
def fresh_artifact() -> dict[str, Any]:
    return compile_artifact()  # ~2 s: once per session


def test_committed_artifact_matches_a_fresh_compile(fresh_artifact: dict[str, Any]) -> None:
    assert ARTIFACT_PATH.read_text() == render(fresh_artifact), "run `python -m contracts.compile` and commit"


def test_artifact_records_compiler_settings_and_source(fresh_artifact: dict[str, Any]) -> None:
    artifact = load_artifact()
    assert artifact["compiler"].startswith("0.8.28")
    assert artifact["settings"]["evmVersion"] == "shanghai"
    assert artifact["settings"]["optimizer"]["enabled"] is True
    import hashlib

    assert artifact["source_sha256"] == hashlib.sha256(SOURCE_PATH.read_bytes()).hexdigest()
    # EIP-170: a contract above 24,576 bytes cannot be deployed on a real chain
    assert (len(artifact["deployedBytecode"]) - 2) // 2 <= 24_576
