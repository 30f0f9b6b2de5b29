"""Compile contracts/TrainingRun.sol with the npm (wasm) solc through py-solc-x and write the committed artifact
contracts/artifacts/TrainingRun.json. Run `python -m contracts.compile` after editing the Solidity source;
a test compiles afresh and fails if the committed artifact differs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import solcx
from solcx.exceptions import SolcError

from base.errors import ToolMissingError, TrainmarketError
from base.paths import solc_wrapper
from contracts.errors import CompileError

CONTRACTS_DIR = Path(__file__).resolve().parent
SOURCE_PATH = CONTRACTS_DIR / "TrainingRun.sol"
ARTIFACT_PATH = CONTRACTS_DIR / "artifacts" / "TrainingRun.json"
CONTRACT_NAME = "TrainingRun"
# Contracts whose functions a contract serves through its fallback (DELEGATECALL): their ABI is merged into its
# artifact, so a client sees one contract at one address.
EXTENSIONS: dict[str, tuple[str, ...]] = {"TrainingRun": ("TrainingRunExtension",)}
EIP170_LIMIT = 24_576  # bytes of runtime code a contract may have on Ethereum (and on Anvil by default)

# Shanghai (no transient storage, no MCOPY) so the same bytecode also runs on Ganache.
SETTINGS: dict[str, Any] = {
    "evmVersion": "shanghai",
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": False,
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def compiler_version(wrapper: Path) -> str:
    """The solc version string the wrapper reports, e.g. `0.8.28+commit.7893614a.Emscripten.clang`."""
    out = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise CompileError(f"unexpected `--version` output from {wrapper}: {out!r}")


def compile_artifact(source_path: Path = SOURCE_PATH, contract_name: str = CONTRACT_NAME) -> dict[str, Any]:
    """Compile `contract_name` from the source and return the artifact dict (abi, bytecode, deployedBytecode,
    compiler, settings, source_sha256); tests compile their own attacker contracts with it. Raises
    ToolMissingError when the wrapper or node_modules is absent, CompileError on errors."""
    wrapper = solc_wrapper()
    if not wrapper.exists():
        raise ToolMissingError("solc-wrapper", str(wrapper))
    source = source_path.read_text()
    standard_input = {
        "language": "Solidity",
        "sources": {source_path.name: {"content": source}},
        "settings": SETTINGS,
    }
    try:
        output = solcx.compile_standard(standard_input, solc_binary=str(wrapper), allow_empty=False)
    except SolcError as err:
        raise CompileError(str(err).split("\n> command")[0].strip()) from None
    except (FileNotFoundError, PermissionError) as err:
        raise ToolMissingError("solc-wrapper", str(wrapper), f"{err}; run `make setup`") from err
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    compiled = output["contracts"][source_path.name]
    contract = compiled[contract_name]
    extensions = [compiled[name] for name in EXTENSIONS.get(contract_name, ()) if name in compiled]
    return {
        "contractName": contract_name,
        "sourceName": source_path.name,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "compiler": compiler_version(wrapper),
        "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"},
        "abi": merged_abi(contract["abi"], [e["abi"] for e in extensions]),
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        "extensionDeployedBytecode": ["0x" + e["evm"]["deployedBytecode"]["object"] for e in extensions],
    }


def merged_abi(own: list[dict[str, Any]], extensions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The contract's ABI plus its extensions' functions, events and errors (each signature once; an extension's
    constructor is not callable through the contract)."""
    def signature(item: dict[str, Any]) -> str:
        types = ",".join(str(i["type"]) for i in item.get("inputs", []))
        return f"{item['type']}:{item.get('name', '')}({types})"

    merged = list(own)
    seen = {signature(item) for item in own}
    for abi in extensions:
        for item in abi:
            if item["type"] in ("constructor", "fallback", "receive") or signature(item) in seen:
                continue
            seen.add(signature(item))
            merged.append(item)
    return merged


def runtime_sizes(artifact: dict[str, Any]) -> list[int]:
    """Runtime code bytes of the contract and of each extension (each must stay within EIP170_LIMIT)."""
    codes = [artifact["deployedBytecode"], *artifact.get("extensionDeployedBytecode", [])]
    return [(len(code) - 2) // 2 for code in codes]


def render(artifact: dict[str, Any]) -> str:
    """The artifact as committed (stable key order, trailing newline) so diffs are meaningful."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def load_artifact(path: Path = ARTIFACT_PATH) -> dict[str, Any]:
    """The committed artifact; never compiles (a reader needs no compiler)."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CompileError(f"{path} is missing: run `python -m contracts.compile`") from err
    return data


def main() -> int:
    try:
        artifact = compile_artifact()
    except TrainmarketError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ARTIFACT_PATH.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT_PATH.write_text(render(artifact))
    sizes = runtime_sizes(artifact)
    print(f"wrote {ARTIFACT_PATH} ({artifact['compiler']}, runtime bytes {sizes}, limit {EIP170_LIMIT})")
    if max(sizes) > EIP170_LIMIT:
        print(f"error: runtime code over the EIP-170 limit of {EIP170_LIMIT} bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
