"""Fixtures shared by every test package: one real IPFS daemon per session (js-ipfs, offline, loopback)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from base import env
from base.paths import REPO_ROOT
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon

# A test that does not choose a state folder writes to the checkout's ignored .trainmarket/, never to the
# user's ~/.trainmarket (logs of the chains the tests start, dataset caches). Subprocesses inherit it.
os.environ.setdefault(env.HOME, str(REPO_ROOT / ".trainmarket"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chain", default="anvil", choices=["anvil", "ganache"],
                     help="local chain for the end-to-end test (default anvil)")


@pytest.fixture(scope="session")
def ipfs_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsDaemon]:
    repo: Path = tmp_path_factory.mktemp("ipfs") / "repo"
    with IpfsDaemon(repo) as daemon:
        yield daemon


@pytest.fixture()
def ipfs_client(ipfs_daemon: IpfsDaemon) -> Iterator[IpfsClient]:
    with IpfsClient(ipfs_daemon.api_url, timeout=10.0, retries=1, backoff=0.05) as client:
        yield client
