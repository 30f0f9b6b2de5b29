"""Keys: keystore and environment sources, and that no error or command output ever contains the key."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from base.paths import REPO_ROOT
from node.keys import PASSPHRASE_ENV, PRIVATE_KEY_ENV, KeySourceError, load_account, new_keystore, write_keystore
from trainmarket.cli import main

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


def test_cli_never_prints_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capfd: pytest.CaptureFixture[str]) -> None:
    """keygen prints the address only; a failing command that loaded the key does not print it either. In this
    process (the entry point `trainmarket` runs, output captured at the file descriptors): real CLI processes, each
    importing torch, are the slow test below."""
    monkeypatch.setenv(PASSPHRASE_ENV, "pw")
    out = tmp_path / "k.json"
    assert main(["node", "keygen", "--out", str(out)]) == 0
    made = capfd.readouterr()
    key_hex = Account.decrypt(json.loads(out.read_text()), "pw").hex().removeprefix("0x")
    assert key_hex not in made.out + made.err
    assert Account.from_key(key_hex).address in made.out

    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"address": "0x" + "00" * 20, "block": 0, "rpc_url": "http://127.0.0.1:9"}))
    assert main(["node", "status", "--deployment", str(deployment), "--keystore", str(out)]) == 2
    failed = capfd.readouterr()
    assert "unreachable" in failed.err
    assert key_hex not in failed.out + failed.err
    assert "Traceback" not in failed.err


# ------------------------------------------------------------------ keystore format and secrecy

PASSPHRASE = "tr0ub4dor&3-passphrase"


def test_keystore_is_the_standard_encrypted_v3_format(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    write_keystore(Account.from_key(KEY), path, PASSPHRASE)
    text = path.read_text()
    doc = json.loads(text)
    assert doc["version"] == 3 and set(doc) >= {"address", "crypto", "id", "version"}
    crypto = doc["crypto"]
    assert crypto["cipher"] == "aes-128-ctr" and crypto["kdf"] == "pbkdf2"
    assert crypto["kdfparams"]["c"] >= 100_000 and len(bytes.fromhex(crypto["kdfparams"]["salt"])) >= 16
    assert {"ciphertext", "mac", "cipherparams"} <= set(crypto)
    assert KEY.removeprefix("0x") not in text and PASSPHRASE not in text
    # any eth-account (or geth/foundry) reader opens it with the passphrase, and only with it
    assert Account.decrypt(doc, PASSPHRASE).hex().removeprefix("0x") == KEY.removeprefix("0x")
    with pytest.raises(ValueError):
        Account.decrypt(doc, PASSPHRASE + "x")


def test_loading_keys_logs_and_prints_neither_key_nor_passphrase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "key.json"
    write_keystore(Account.from_key(KEY), path, PASSPHRASE)
    messages: list[str] = []
    load_account(path, env={PASSPHRASE_ENV: PASSPHRASE})
    load_account(path, env={}, prompt=lambda _: PASSPHRASE)
    load_account(None, env={PRIVATE_KEY_ENV: KEY})
    for env in ({PASSPHRASE_ENV: PASSPHRASE + "-wrong"}, {PASSPHRASE_ENV: ""}):
        with pytest.raises(KeySourceError) as info:
            load_account(path, env=env)
        messages.append(str(info.value))
    for almost in (KEY[:-1], KEY + "00", KEY[:-1] + "g"):  # KEY[:-1] was accepted as another (padded) key
        with pytest.raises(KeySourceError) as info:
            load_account(None, env={PRIVATE_KEY_ENV: almost})
        messages.append(str(info.value))
    out, err = capfd.readouterr()
    seen = "\n".join([*messages, caplog.text, out, err])
    assert KEY.removeprefix("0x")[:-1] not in seen
    assert PASSPHRASE not in seen


@pytest.mark.slow  # real CLI processes, each importing torch: 20-45 s on the shared 2-core machine
def test_cli_commands_that_load_keys_never_print_key_or_passphrase(tmp_path: Path) -> None:
    """Every node command that loads a key, from a keystore (right and wrong passphrase) or from the
    environment, failing at the unreachable chain: plain errors, neither secret in stdout or stderr."""
    keystore = tmp_path / "key.json"
    write_keystore(Account.from_key(KEY), keystore, PASSPHRASE)
    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"address": "0x" + "00" * 20, "block": 0, "rpc_url": "http://127.0.0.1:9",
                                      "ipfs_api": "http://127.0.0.1:9", "config_cid": "bafk"}))
    common = ["--deployment", str(deployment), "--home", str(tmp_path / "home")]
    runs = [
        (["register", "--stake", "1", *common, "--keystore", str(keystore)], {PASSPHRASE_ENV: PASSPHRASE}),
        (["unstake", *common, "--keystore", str(keystore)], {PASSPHRASE_ENV: PASSPHRASE + "-wrong"}),
        (["run", "--windows", "1", "--device", "cpu", *common], {PRIVATE_KEY_ENV: KEY}),
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "trainmarket.cli", "node", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                         env={**{k: v for k, v in os.environ.items() if k not in (PASSPHRASE_ENV, PRIVATE_KEY_ENV)},
                              **env})
        for args, env in runs
    ]
    for (args, _), proc in zip(runs, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode != 0, (args, out, err)
        assert "Traceback" not in err, (args, err)
        assert KEY.removeprefix("0x") not in out + err, args
        assert PASSPHRASE not in out + err, args
