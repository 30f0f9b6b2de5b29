"""The `trainmarket` command line as a whole: every flag explains itself, the parsers load neither torch nor
web3 (so every --help answers at once), --version, where state lives, ETH amounts in and out, and
`node keygen` asking for its passphrase on a terminal."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account

from base import env
from base.paths import REPO_ROOT, state_dir
from base.units import ETH, eth, parse_eth
from trainmarket.cli import build_parser, version


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _subparsers(child)
    return found


def test_every_flag_of_every_command_has_help() -> None:
    missing = [
        f"{prog} {'/'.join(action.option_strings) or action.dest}"
        for prog, parser in _subparsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help and action.help.strip())
    ]
    assert not missing, f"flags without help text: {missing}"


def test_stake_flags_are_named_alike_and_take_eth() -> None:
    parser = build_parser()
    node = parser.parse_args(["node", "register", "--stake", "2.5"])
    validator = parser.parse_args(["validator", "register", "--stake", "5"])
    old_name = parser.parse_args(["validator", "register", "--stake-eth", "5"])
    assert node.stake == 5 * ETH // 2 and validator.stake == old_name.stake == 5 * ETH


def test_parsers_load_neither_torch_nor_web3() -> None:
    code = ("import sys; from trainmarket.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'web3', 'eth_account', 'rich') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "trainmarket.cli", "--version"], capture_output=True, text=True,
                          cwd=REPO_ROOT, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"trainmarket {version()}"
    assert version()[0].isdigit()


def test_state_lives_in_the_users_home_unless_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(env.HOME, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert state_dir() == tmp_path / "user" / ".trainmarket"
    monkeypatch.setenv(env.HOME, str(tmp_path / "elsewhere"))
    assert state_dir() == tmp_path / "elsewhere"


def test_eth_amounts() -> None:
    assert parse_eth("0.5") == ETH // 2 and parse_eth("1e-3") == ETH // 1000 and parse_eth("1000") == 1000 * ETH
    for bad in ("0", "-1", "abc", "nan", "1e-19"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_eth(bad)
    assert [eth(w) for w in (0, ETH, ETH // 2, 1000 * ETH, 12_345_678_901_234_567)] == \
        ["0", "1", "0.5", "1000", "0.012346"]
    assert eth(1) == "0.000000000000000001"  # dust is shown, not rounded to a misleading 0


def test_keygen_asks_for_the_passphrase_twice_on_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "key.json"
    child_env = {k: v for k, v in os.environ.items() if k != env.KEY_PASSPHRASE}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with the pseudo-terminal as its controlling terminal
        os.chdir(REPO_ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "trainmarket.cli", "node", "keygen", "--out", str(out)],
                  child_env)
    transcript = _converse(fd, [("passphrase for the new keystore", "s3cret-words"),
                                ("the same passphrase again", "s3cret-words")])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    address = Account.from_key(Account.decrypt(json.loads(out.read_text()), "s3cret-words")).address
    assert address in transcript and "s3cret-words" not in transcript  # not echoed


def _converse(fd: int, script: list[tuple[str, str]], timeout: float = 60) -> str:
    """Answer each prompt when it appears on the terminal; return everything the child printed."""
    seen = ""
    deadline = time.monotonic() + timeout  # bounds a broken test only
    for prompt, answer in [*script, ("", "")]:
        while prompt and prompt not in seen:
            assert time.monotonic() < deadline, seen
            try:
                seen += os.read(fd, 1024).decode(errors="replace")
            except OSError:  # the child exited
                return seen
        if answer:
            os.write(fd, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return seen
        if not chunk:
            return seen
        seen += chunk.decode(errors="replace")
