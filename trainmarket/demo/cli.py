"""`trainmarket demo` (what `make demo` runs): flags scale the default network up or down."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the whole marketplace with adversaries on a local testnet")
    parser.add_argument("--trainers", type=int, default=5, help="honest trainers (default 5)")
    parser.add_argument("--sybils", type=int, default=3, help="identities in the Sybil swarm (default 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs to settle (default 2)")
    parser.add_argument("--windows-per-epoch", type=int, default=3, help="windows per reward epoch (default 3)")
    parser.add_argument("--window-blocks", type=int, default=24, help="blocks per window (1 block/s)")
    parser.add_argument("--model", default="tiny", help="model preset: tiny, small, base")
    parser.add_argument("--device", default="cpu", help="validators' device: auto, cpu or cuda")
    parser.add_argument("--chain", default="anvil", choices=["anvil", "ganache"],
                        help="local chain to run on (default anvil; ganache is slower)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    parser.add_argument("--audit", action="store_true",
                        help="after the run, replay every published window of every validator with `validator "
                             "audit` and record the verdicts in report.json (a few minutes more)")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from trainmarket.demo.orchestrator import DemoSettings, run_demo

    settings = DemoSettings(honest=args.trainers, sybils=args.sybils, epochs=args.epochs,
                            windows_per_epoch=args.windows_per_epoch, window_blocks=args.window_blocks,
                            model=args.model, device=args.device, chain=args.chain, audit=args.audit)
    if args.out is not None:
        settings.out_dir = args.out
    report = run_demo(settings)
    print(report.resolve())
    return 0
