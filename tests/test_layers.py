"""The floor plan, checked: each package imports only the packages below it, so there are no cycles.

    base                      errors, paths, processes, units, run config, wire types, the model
    contracts, ipfs           the chain and the storage, each on base alone
    tensors                   codecs and the payload format (on base, and ipfs for its size error)
    node                      the trainer
    validator                 the validator (may use the trainer's pieces, never the reverse)
    trainmarket, bench        CLI, demo, devnet; benchmarks

Imports inside functions count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BELOW: dict[str, set[str]] = {
    "base": set(),
    "contracts": {"base"},
    "ipfs": {"base"},
    "tensors": {"base", "ipfs"},
    "node": {"base", "contracts", "ipfs", "tensors"},
    "validator": {"base", "contracts", "ipfs", "tensors", "node"},
    "trainmarket": {"base", "contracts", "ipfs", "tensors", "node", "validator"},
    "bench": {"base", "contracts", "ipfs", "tensors", "node", "validator", "trainmarket"},
}
MAX_MODULE_LINES = 500


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(first-party package, line) of every import in `path`."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in BELOW)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(BELOW))
def test_a_package_imports_only_what_lies_below_it(package: str) -> None:
    allowed = BELOW[package] | {package}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}"
             for path in modules(package) for target, line in sorted(project_imports(path)) if target not in allowed]
    assert not wrong, "\n".join(wrong)


def test_the_layers_form_no_cycle() -> None:
    """The allowed-imports table itself is acyclic (so the test above rules out package cycles)."""
    done: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, f"cycle: {' -> '.join((*path, package))}"
        if package not in done:
            for lower in BELOW[package]:
                visit(lower, (*path, package))
            done.add(package)

    for package in BELOW:
        visit(package, ())


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from validator.loop import ValidatorLoop\n    return ValidatorLoop\n")
    assert project_imports(module) == {("validator", 4)}


@pytest.mark.parametrize("package", sorted(BELOW))
def test_no_module_is_over_the_size_limit(package: str) -> None:
    big = [f"{path.relative_to(ROOT)}: {n} lines" for path in modules(package)
           if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not big, "\n".join(big)
