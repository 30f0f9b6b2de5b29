"""A real IPFS daemon the project starts and stops: js-ipfs from npm, offline, in its own repo folder,
with every address on 127.0.0.1. A user who already runs Kubo (or any daemon with the standard RPC API)
sets TRAINMARKET_IPFS_API to its API URL and the project uses that instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

import httpx

from base.errors import ProcessStartError, ToolMissingError
from base.paths import jsipfs_cli
from base.process import LOOPBACK, ManagedProcess, free_port

API_ENV = "TRAINMARKET_IPFS_API"


def ipfs_api_from_env() -> str | None:
    """The API URL of a daemon the user runs themselves, if they named one."""
    return os.environ.get(API_ENV) or None


class IpfsDaemon:
    """`IpfsDaemon(repo_dir).start()` … `.stop()`, or use it as a context manager; `.api_url` is its API."""

    def __init__(self, repo_dir: Path, api_port: int | None = None, start_timeout: float = 60.0) -> None:
        self.repo_dir = repo_dir
        self.api_port = api_port or free_port()
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    def _env(self) -> dict[str, str]:
        # js-ipfs's update check writes under ~/.config; keep it inside the repo folder.
        return {"IPFS_PATH": str(self.repo_dir), "XDG_CONFIG_HOME": str(self.repo_dir / ".config")}

    def _init_repo(self, cli: Path) -> None:
        if (self.repo_dir / "config").exists():
            return
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["node", str(cli), "init", "--empty-repo"],
            env={**os.environ, **self._env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ProcessStartError("js-ipfs init", f"exit code {result.returncode}", result.stderr[-2000:])

    def _write_config(self) -> None:
        path = self.repo_dir / "config"
        config = json.loads(path.read_text())
        config["Addresses"] = {
            "API": f"/ip4/{LOOPBACK}/tcp/{self.api_port}",
            "Gateway": f"/ip4/{LOOPBACK}/tcp/{free_port()}",
            "RPC": f"/ip4/{LOOPBACK}/tcp/{free_port()}",
            "Swarm": [],
            "Announce": [],
            "NoAnnounce": [],
            "Delegates": [],
        }
        config["Bootstrap"] = []
        config.setdefault("Discovery", {})["MDNS"] = {"Enabled": False}
        config["Discovery"]["webRTCStar"] = {"Enabled": False}
        path.write_text(json.dumps(config, indent=2))

    def _ready(self) -> bool:
        try:
            return httpx.post(f"{self.api_url}/api/v0/version", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> IpfsDaemon:
        cli = jsipfs_cli()
        if not cli.exists():
            raise ToolMissingError("js-ipfs", str(cli))
        self._init_repo(cli)
        self._write_config()
        self._process = ManagedProcess(
            "ipfs daemon",
            ["node", str(cli), "daemon", "--offline"],
            log_path=self.repo_dir / "daemon.log",
            ready=self._ready,
            env=self._env(),
            start_timeout=self.start_timeout,
        )
        # A repo left locked by a killed daemon would stop the next one from starting. js-ipfs's lock is a
        # directory (proper-lockfile's mkdir lock), Kubo's a file.
        for lock in (self.repo_dir / "repo.lock", self.repo_dir / "api"):
            if lock.is_dir():
                shutil.rmtree(lock, ignore_errors=True)
            else:
                lock.unlink(missing_ok=True)
        self._process.start()
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> IpfsDaemon:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
