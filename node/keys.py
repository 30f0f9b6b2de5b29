"""Where a node's signing key comes from: an eth-account encrypted keystore file (passphrase from the
environment or a prompt) or a raw key in the environment. A key is never printed, logged or put into an
error message; errors name the *source* (file, variable) instead, and are raised `from None` because
the library's own exception text may quote the key."""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount

from base.errors import TrainmarketError

PRIVATE_KEY_ENV = "TRAINMARKET_PRIVATE_KEY"
PASSPHRASE_ENV = "TRAINMARKET_KEY_PASSPHRASE"
PRIVATE_KEY_HEX = re.compile(r"(0x)?[0-9a-fA-F]{64}")
# scrypt is the keystore default but costs ~1 s per unlock; pbkdf2 at this count is still a real KDF.
KEYSTORE_KDF: Literal["pbkdf2"] = "pbkdf2"
KEYSTORE_ITERATIONS = 262_144

PromptFn = Callable[[str], str]


class KeySourceError(TrainmarketError):
    """No usable signing key: nothing configured, an unreadable keystore, a wrong passphrase, a malformed key."""


def load_account(
    keystore: Path | None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> LocalAccount:
    """The node's account: from `keystore` if given, else from $TRAINMARKET_PRIVATE_KEY.

    The keystore passphrase comes from $TRAINMARKET_KEY_PASSPHRASE, else from `prompt` (getpass by default,
    only when stdin is a terminal, so a daemonised node fails fast instead of hanging)."""
    env = os.environ if env is None else env
    if keystore is not None:
        return _from_keystore(keystore, env, prompt)
    raw = env.get(PRIVATE_KEY_ENV, "").strip()
    if not raw:
        raise KeySourceError(
            f"no signing key: pass --keystore FILE (see `trainmarket node keygen`) or set ${PRIVATE_KEY_ENV}"
        )
    return account_from_hex(raw, f"${PRIVATE_KEY_ENV}")


def account_from_hex(raw: str, source: str) -> LocalAccount:
    """The account of a raw hex private key; the error names `source`, never the key (the library's may)."""
    # eth-account left-pads a short hex key, so a key missing its last digit would silently be another account.
    try:
        if PRIVATE_KEY_HEX.fullmatch(raw):
            return Account.from_key(raw)
    except (ValueError, TypeError):
        pass
    raise KeySourceError(f"{source} does not hold a valid 32-byte hex private key") from None


def _from_keystore(path: Path, env: Mapping[str, str], prompt: PromptFn | None) -> LocalAccount:
    try:
        encrypted = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise KeySourceError(f"keystore {path} does not exist") from err
    except (OSError, json.JSONDecodeError) as err:
        raise KeySourceError(f"keystore {path} is not a readable keystore file: {err}") from err
    passphrase = env.get(PASSPHRASE_ENV)
    if passphrase is None:
        passphrase = _ask(path, prompt)
    try:
        key = Account.decrypt(encrypted, passphrase)
    except (ValueError, TypeError, KeyError):
        raise KeySourceError(f"cannot unlock keystore {path}: wrong passphrase or damaged file") from None
    return Account.from_key(key)


def _ask(path: Path, prompt: PromptFn | None) -> str:
    if prompt is not None:
        return prompt(f"passphrase for {path}: ")
    if not os.isatty(0):
        raise KeySourceError(f"keystore {path} needs a passphrase: set ${PASSPHRASE_ENV} or run in a terminal")
    return getpass.getpass(f"passphrase for {path}: ")


def write_keystore(account: LocalAccount, path: Path, passphrase: str) -> None:
    """Encrypt `account` into `path` (created with mode 0600, never overwritten)."""
    if path.exists():
        raise KeySourceError(f"{path} already exists; refusing to overwrite a keystore")
    if not passphrase:
        raise KeySourceError("refusing to write a keystore with an empty passphrase")
    encrypted = Account.encrypt(account.key, passphrase, kdf=KEYSTORE_KDF, iterations=KEYSTORE_ITERATIONS)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(encrypted, out)


def new_keystore(path: Path, passphrase: str) -> str:
    """Create a fresh account in a keystore at `path`; returns only its address."""
    account = Account.create()
    write_keystore(account, path, passphrase)
    return str(account.address)

