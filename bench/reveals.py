"""The population's reveal phase alone: N trainer identities of one host process (node/population_host.py) reveal
a window on a real Anvil (1-s blocks) and a real js-ipfs daemon. What it costs is what bounds a load run's
reveal period (bench.load --population): every identity's payload add and reveal transaction must land in it.

    python -m bench.reveals                    # 64 identities (bench.load's share per host process at 256)
    python -m bench.reveals --identities 128 --rounds 3

Per round: the identities train and commit one window (automine), then the reveal period opens with 1-s blocks
and the round measures, until every reveal is mined: wall seconds, blocks of the reveal period used, CPU seconds
per reveal in this process and in the daemon and chain processes (from /proc), and chain and daemon calls per
reveal (counted at the shared provider, cached answers included, and at the IPFS client). Writes
bench/results/reveals.json with the machine's load average at each round (the machine is shared)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from base.clock import WindowClock
from base.units import ETH
from bench.load import POPULATION_CONFIG, descendants, process_role
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import deploy
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.population import ObservingProvider, population_account
from node.population_host import Population, load_identities
from node.session import NodeTarget
from trainmarket.demo.network import publish_run_config, run_params

RESULTS = Path(__file__).resolve().parent / "results" / "reveals.json"
WINDOW_BLOCKS = 400  # room for every identity to train and commit under automine (a block per transaction)
REVEAL_BLOCKS = 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _counting(counts: Counter[str], call: Callable[..., Any]) -> Callable[..., Any]:
    def counted(method: Any, *args: Any, **kwargs: Any) -> Any:
        counts[str(method)] += 1
        return call(method, *args, **kwargs)

    return counted


def one_round(identities: int, workers: int, folder: Path, label: str) -> dict[str, Any]:
    with IpfsDaemon(folder / "ipfs") as daemon, AnvilNode() as chain, IpfsClient(daemon.api_url) as blobs:
        config, config_cid = publish_run_config(blobs, POPULATION_CONFIG, 1 << 20)
        web3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        deployment = deploy(web3, Account.from_key(chain.private_keys[0]))
        sponsor = TrainingRunClient(web3, deployment.address, Account.from_key(chain.private_keys[0]),
                                    deployment.block)
        run_id = sponsor.create_run(run_params(config, WINDOW_BLOCKS, REVEAL_BLOCKS, 5), 100 * ETH)
        for i in range(identities):
            account = population_account(label, i)
            chain.set_balance(account.address, 10 * ETH)
            sponsor.with_account(account).register_trainer(run_id, ETH)
        target = NodeTarget(chain.rpc_url, deployment.address, deployment.block, run_id, config_cid, daemon.api_url)
        nodes, shared, _ = load_identities(target, folder / "home", folder / "cache", label, range(identities))
        provider = nodes[0].client.web3.provider  # one provider and one IPFS client serve every identity
        assert isinstance(provider, ObservingProvider)
        rpc = provider.calls
        ipfs: Counter[str] = Counter()
        store = nodes[0].setup.blobs
        store._json = _counting(ipfs, store._json)  # type: ignore[attr-defined]
        clock = WindowClock.of(sponsor.get_run(run_id))
        window = clock.window_of(chain.block_number() + 1) + 1
        chain.mine(clock.start(window) - 1 - chain.block_number())
        population = Population(nodes, shared, run_id, workers)
        stop = threading.Event()
        runner = threading.Thread(target=population.run, args=(stop, window), daemon=True)
        runner.start()
        try:
            while not all((e := n.journal.get(window)) is not None and e.committed for n in nodes):
                if not runner.is_alive() or population.failed:
                    raise SystemExit(f"the population stopped before committing: {population.failed}")
                time.sleep(0.2)
            chain.mine(clock.end(window) - 1 - chain.block_number())  # the next block opens the reveal period
            rpc.clear()
            ipfs.clear()
            others = {role: pid for pid in descendants(os.getpid())
                      if (role := process_role(pid)) in ("ipfs", "chain")}
            before = {k: _cpu_seconds(pid) for k, pid in others.items()}
            load = os.getloadavg()[0]
            chain.set_automine(False)
            chain.start_clock(1.0)
            began, cpu = time.monotonic(), time.process_time()
            runner.join(timeout=REVEAL_BLOCKS)
            wall, cpu = time.monotonic() - began, time.process_time() - cpu
            other_cpu = {k: _cpu_seconds(pid) - before[k] for k, pid in others.items()}
        finally:
            stop.set()
            for node in nodes:
                node.close()
            shared.close()
        reveals = [r for r in sponsor.reveals(run_id, window) if r.block < clock.reveal_end(window)]
        NONCES.reset()
    return {
        "identities": identities, "revealed": len(reveals), "wall_seconds": round(wall, 2),
        "reveal_span_blocks": max((r.block - clock.end(window) + 1 for r in reveals), default=None),
        "cpu_ms_per_reveal": {"population": round(1000 * cpu / identities, 1),
                              **{k: round(1000 * v / identities, 1) for k, v in other_cpu.items()}},
        "chain_calls_per_reveal": {k: round(v / identities, 2) for k, v in rpc.most_common()},
        "ipfs_calls_per_reveal": {k: round(v / identities, 2) for k, v in ipfs.most_common()},
        "load_average_1min": round(load, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--identities", type=int, default=64)
    parser.add_argument("--workers", type=int, default=64, help="threads stepping identities (population_host)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds = []
    for k in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-reveals-") as tmp:
            rounds.append(one_round(args.identities, args.workers, Path(tmp), f"reveals-{k}"))
        print(json.dumps(rounds[-1]), flush=True)
    totals = [sum(r["cpu_ms_per_reveal"].values()) for r in rounds]
    result = {"identities": args.identities, "workers": args.workers, "rounds": rounds,
              "cpu_ms_per_reveal_all_processes": {"min": min(totals), "median": statistics.median(totals),
                                                  "max": max(totals)},
              "cpu_count": os.cpu_count()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
