"""`trainmarket validator …` argument handling: the subcommands exist, and setup mistakes are one plain
sentence with exit code 2 (no traceback, no network needed to report them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainmarket.cli import build_parser, main
from validator import cli as validator_cli


def test_validator_subcommands_are_registered() -> None:
    """Each action runs its own handler (two actions wired to one handler would pass a mere `callable`)."""
    parser = build_parser()
    handlers: dict[str, object] = {}
    for action in ("register", "run", "serve", "status", "claim", "audit"):
        args = parser.parse_args(["validator", action, "--window", "1"] if action == "audit" else
                                 ["validator", action, "--stake", "2"] if action == "register" else
                                 ["validator", action])
        handlers[action] = args.func
        assert args.func is getattr(validator_cli, f"cmd_{action}"), (action, args.func)
    assert len(set(handlers.values())) == len(handlers)


def test_audit_requires_a_window(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validator", "audit"])
    assert info.value.code == 2 and "--window" in capsys.readouterr().err


def test_missing_deployment_file_is_a_plain_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validator", "register", "--stake-eth", "2", "--deployment", str(tmp_path / "none.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no deployment file") and "Traceback" not in err


def test_missing_key_is_a_plain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TRAINMARKET_VALIDATOR_KEY", raising=False)
    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"address": "0x" + "11" * 20, "block": 1, "rpc_url": "http://127.0.0.1:9"}))
    code = main(["validator", "register", "--stake-eth", "2", "--deployment", str(deployment)])
    assert code == 2 and "no validator key" in capsys.readouterr().err


def test_the_ipfs_api_comes_from_the_deployment_file(tmp_path: Path) -> None:
    from contracts.deploy import DEFAULT_IPFS_API, read_deployment

    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"address": "0x" + "11" * 20, "block": 1, "rpc_url": "http://127.0.0.1:9",
                                      "ipfs_api": "http://127.0.0.1:4242"}))
    assert read_deployment(deployment).ipfs_api == "http://127.0.0.1:4242"
    deployment.write_text(json.dumps({"address": "0x" + "11" * 20}))
    assert read_deployment(deployment).ipfs_api == DEFAULT_IPFS_API
