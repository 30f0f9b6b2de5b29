"""Keys: keystore and environment sources, and that no error or command output ever contains the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from node.keys import PASSPHRASE_ENV, PRIVATE_KEY_ENV, KeySourceError, load_account, new_keystore, write_keystore
from trainmarket.paths import REPO_ROOT

KEY = "0x" + "11" * 32


def test_env_key_loads_the_account() -> None:
    account = load_account(None, env={PRIVATE_KEY_ENV: KEY})
    assert account.address == Account.from_key(KEY).address


def test_no_key_source_names_both_options() -> None:
    with pytest.raises(KeySourceError, match=r"--keystore.*TRAINMARKET_PRIVATE_KEY"):
        load_account(None, env={})


def test_malformed_env_key_is_refused_without_echoing_it() -> None:
    bad = "0x" + "zz" * 32
    with pytest.raises(KeySourceError) as info:
        load_account(None, env={PRIVATE_KEY_ENV: bad})
    assert "zz" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_keystore_round_trip_with_env_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    address = new_keystore(path, "correct horse")
    assert path.stat().st_mode & 0o777 == 0o600
    assert KEY.removeprefix("0x") not in path.read_text()
    account = load_account(path, env={PASSPHRASE_ENV: "correct horse"})
    assert account.address == address


def test_keystore_passphrase_from_prompt(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    address = new_keystore(path, "pw")
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "pw"

    assert load_account(path, env={}, prompt=prompt).address == address
    assert asked and str(path) in asked[0]


def test_wrong_passphrase_and_missing_file_are_plain_errors(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    write_keystore(Account.from_key(KEY), path, "right")
    with pytest.raises(KeySourceError, match="wrong passphrase"):
        load_account(path, env={PASSPHRASE_ENV: "wrong"})
    with pytest.raises(KeySourceError, match="does not exist"):
        load_account(tmp_path / "nope.json", env={PASSPHRASE_ENV: "x"})
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(KeySourceError, match="not a readable keystore"):
        load_account(tmp_path / "junk.json", env={PASSPHRASE_ENV: "x"})


def test_keystore_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    new_keystore(path, "pw")
    before = path.read_text()
    with pytest.raises(KeySourceError, match="already exists"):
        new_keystore(path, "pw")
    assert path.read_text() == before
    assert json.loads(before)["crypto"]["kdf"] == "pbkdf2"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainmarket.cli", "node", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **env}, timeout=60,
    )


def test_cli_never_prints_the_key(tmp_path: Path) -> None:
    """keygen prints the address only; a failing command that loaded the key does not print it either."""
    out = tmp_path / "k.json"
    made = _cli(["keygen", "--out", str(out)], {PASSPHRASE_ENV: "pw"})
    assert made.returncode == 0, made.stderr
    key_hex = Account.decrypt(json.loads(out.read_text()), "pw").hex().removeprefix("0x")
    assert key_hex not in made.stdout + made.stderr
    assert Account.from_key(key_hex).address in made.stdout

    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"address": "0x" + "00" * 20, "block": 0, "rpc_url": "http://127.0.0.1:9"}))
    failed = _cli(["status", "--deployment", str(deployment), "--keystore", str(out)], {PASSPHRASE_ENV: "pw"})
    assert failed.returncode == 2
    assert "unreachable" in failed.stderr
    assert key_hex not in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr
