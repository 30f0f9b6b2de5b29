"""The environment variables the project reads, named once. A base module (no imports of the project's
packages), so the command-line parsers can quote them in their help without loading web3 or torch."""

from __future__ import annotations

HOME = "TRAINMARKET_HOME"  # state folder (default ~/.trainmarket)
RPC_URL = "TRAINMARKET_RPC_URL"  # chain JSON-RPC endpoint, over the deployment file's
IPFS_API = "TRAINMARKET_IPFS_API"  # IPFS RPC API, over the deployment file's
PRIVATE_KEY = "TRAINMARKET_PRIVATE_KEY"  # a trainer's (or devnet sponsor's) raw hex key
VALIDATOR_KEY = "TRAINMARKET_VALIDATOR_KEY"  # a validator's raw hex key
KEY_PASSPHRASE = "TRAINMARKET_KEY_PASSPHRASE"  # unlocks --keystore files without a prompt
