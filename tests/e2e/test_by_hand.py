"""README.md's "Using it by hand", run as a new user would: the commands are read from the README itself (so
the two cannot drift), one terminal at a time, as real processes on a real devnet.

Terminal 1 holds the devnet; terminal 2 registers a validator and serves; terminal 3 registers a trainer and
runs it for three windows; terminal 4 claims while the node runs and reads the status and an audit after.
Beyond what the README shows, the test runs terminal 3's `node run` a second time while the first runs (it
must refuse to start), and checks that no window was missed and every trained window was revealed."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from web3 import Web3

from base import env
from base.paths import REPO_ROOT
from base.process import free_port
from contracts.views import TrainingRunViews

pytestmark = pytest.mark.slow

SECTION = "## Using it by hand"
TERMINAL = re.compile(r"\*\*Terminal (\d+): ([^*]+)\*\*.*?```bash\n(.*?)```", re.DOTALL)
# Bounds a broken run only; the chain (a block a second) is the clock.
START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 300


@dataclass
class Terminal:
    number: int
    title: str
    env: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def by_hand_terminals(readme: str) -> list[Terminal]:
    """The README section's terminals: `export NAME=value` lines become the terminal's environment, every
    other line (backslash continuations joined) is a command."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end > 0 else None]
    terminals = []
    for number, title, block in TERMINAL.findall(section):
        terminal = Terminal(int(number), title.strip().rstrip("."))
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                terminal.env[name] = shlex.split(value)[0]
            else:
                terminal.commands.append(line)
        terminals.append(terminal)
    return terminals


def test_the_readme_parses_into_the_four_terminals() -> None:
    terminals = by_hand_terminals((REPO_ROOT / "README.md").read_text())
    assert [t.number for t in terminals] == [1, 2, 3, 4]
    assert all(t.commands for t in terminals)
    assert terminals[0].commands[-1].endswith("devnet --hold")
    assert terminals[2].commands[-1].split()[1:3] == ["node", "run"]


class Shell:
    """Runs README commands with `bash -c` from the checkout, in one state folder, with a terminal's variables."""

    def __init__(self, home: Path, logs: Path) -> None:
        self.logs = logs
        self.base = {k: v for k, v in os.environ.items()
                     if k not in (env.PRIVATE_KEY, env.VALIDATOR_KEY, env.RPC_URL, env.IPFS_API, env.KEY_PASSPHRASE)}
        self.base[env.HOME] = str(home)
        # The README's dashboard port (8700) may be taken by another test run on this machine.
        self.base["TRAINMARKET_VALIDATOR_PORT"] = str(free_port())
        self.background: list[subprocess.Popen[bytes]] = []

    def run(self, terminal: Terminal, command: str,
            timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env={**self.base, **terminal.env},
                              capture_output=True, text=True, timeout=timeout, check=False)

    def start(self, terminal: Terminal, command: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=REPO_ROOT,
                                    env={**self.base, **terminal.env}, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.background.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    logs = tmp_path / "logs"
    logs.mkdir()
    sh = Shell(tmp_path / "home", logs)
    try:
        yield sh
    finally:
        sh.stop_all()


def wait_for(what: str, done: object, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert proc.poll() is None, f"{what}: the process exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def ok(done: subprocess.CompletedProcess[str], command: str) -> str:
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_by_hand_flow_from_the_readme(shell: Shell, tmp_path: Path) -> None:
    started = time.monotonic()
    devnet, validator, trainer, after = by_hand_terminals((REPO_ROOT / "README.md").read_text())

    # Terminal 1: the devnet, held.
    *setup, hold = devnet.commands
    for command in setup:
        ok(shell.run(devnet, command), command)
    chain, chain_log = shell.start(devnet, hold, "devnet")
    deployment = tmp_path / "home" / "devnet" / "deployment.json"
    wait_for("devnet", lambda: "Ctrl-C" in chain_log.read_text(), chain, chain_log, START_TIMEOUT_S)
    info = json.loads(deployment.read_text())
    views = TrainingRunViews(Web3(Web3.HTTPProvider(info["rpc_url"])), info["address"], info["block"])

    # Terminal 2: register, then serve.
    *setup, serve = validator.commands
    for command in setup:
        ok(shell.run(validator, command), command)
    served, served_log = shell.start(validator, serve, "validator")
    wait_for("validator serve", lambda: "dashboard at" in served_log.read_text(), served, served_log,
             START_TIMEOUT_S)

    # Terminal 3: register, then run the node.
    *setup, run = trainer.commands
    for command in setup:
        ok(shell.run(trainer, command), command)
    node, node_log = shell.start(trainer, run, "node")
    wait_for("the node's first commit", lambda: ": committed " in node_log.read_text(), node, node_log,
             START_TIMEOUT_S)

    # The same `node run` again, with the same key, while the first runs: refused, and the first goes on.
    second = shell.run(trainer, run, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "is already running in process" in second.stderr and "Traceback" not in second.stderr

    # Terminal 4, while the node runs: claim (from the trainer's key, like the node's own commits and reveals).
    claim, *later = after.commands
    assert claim.split()[1:3] == ["node", "claim"]
    ok(shell.run(after, claim), claim)
    assert node.poll() is None, "the node stopped while `node claim` ran"

    node.wait(timeout=RUN_TIMEOUT_S)
    out = node_log.read_text()
    assert node.returncode == 0, out[-3000:]
    assert "done: 3 window(s) trained, 3 revealed, 0 missed" in out, out[-3000:]
    assert "missed —" not in out
    assert re.search(r"window \d+: waiting for block \d+ to (train|reveal) \(now block \d+\)", out)

    # Terminal 4, after: status and an audit of window 3 once the validator has revealed its report (sealed until
    # the weight commits of the window's epoch close, one epoch later).
    for command in later:
        if " audit " in f"{command} ":
            window = int(command.split("--window")[1].split()[0])
            wait_for(f"window {window}'s report revealed",
                     lambda w=window: bool(views.revealed_reports(info["run_id"], w)), served, served_log,
                     RUN_TIMEOUT_S)
        text = ok(shell.run(after, command), command)
        if command.split()[1:3] == ["node", "status"]:
            assert "revealed" in text and "missed reveals 0 of" in text
        if " audit " in f"{command} ":
            assert "PASS" in text.splitlines()[-1], text[-2000:]

    status = json.loads(ok(shell.run(after, ".venv/bin/trainmarket node status --json"), "node status --json"))
    trained = {w["window"] for w in status["windows"]}
    assert len(trained) == 3 and all(w["state"] == "revealed" for w in status["windows"])
    trainer_address = status["trainer"]
    for window in trained:  # every trained window is revealed on chain, none reported missed
        assert any(r.trainer == trainer_address for r in views.reveals(info["run_id"], window))
    assert status["slashing"]["misses"] == 0
    print(f"by-hand flow: {time.monotonic() - started:.0f} s")
