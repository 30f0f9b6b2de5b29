"""Where the project's installed tools live. Each path can be overridden by an environment variable so a
user's own installation (a Kubo daemon, a native anvil) works unchanged."""

from __future__ import annotations

import os
from pathlib import Path

from base import env

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = Path(os.environ.get("TRAINMARKET_NODE_MODULES", REPO_ROOT / "node_modules"))


def anvil_binary() -> Path:
    """The anvil executable: $TRAINMARKET_ANVIL, else the one inside the npm package."""
    override = os.environ.get("TRAINMARKET_ANVIL")
    return Path(override) if override else NODE_MODULES / "@foundry-rs/anvil-linux-amd64/bin/anvil"


def ganache_cli() -> Path:
    """The ganache CLI script from npm."""
    return NODE_MODULES / "ganache/dist/node/cli.js"


def jsipfs_cli() -> Path:
    """The js-ipfs CLI script from npm."""
    return NODE_MODULES / "ipfs/src/cli.js"


def solc_wrapper() -> Path:
    """The executable that lets py-solc-x drive the npm (wasm) solc; see contracts/solc-wrapper."""
    override = os.environ.get("SOLCX_BINARY_PATH")
    return Path(override) if override else REPO_ROOT / "contracts" / "solc-wrapper"


def state_dir() -> Path:
    """Per-user working folder for daemons' data, journals, caches and the devnet's files: $TRAINMARKET_HOME,
    else ~/.trainmarket. Never the package's own folder, which is site-packages (read-only, shared) in a
    normal install."""
    override = os.environ.get(env.HOME)
    return Path(override).expanduser() if override else Path.home() / ".trainmarket"
