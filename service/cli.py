"""``sae-backend`` command line: simulate, serve, demo. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_simulate(sub: argparse._SubParsersAction, model_flags: bool = True) -> None:
    """``model_flags=False`` leaves out the flags the simulator's settings make, which import torch."""
    p = sub.add_parser("simulate", help="offline active-learning simulation with an oracle")
    p.add_argument("--dataset", default="digits", help="digits, fashion-mnist, mnist or idx")
    p.add_argument("--data-path", default=None)
    p.add_argument("--groups", default=None, help='e.g. "0,3,5,6|2,4,9|1,7,8"')
    p.add_argument("--model", type=_csv, default=["sae", "ae", "classifier"])
    p.add_argument("--strategy", type=_csv, default=["margin", "random"])
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5, help="acquisition rounds; the curve has rounds + 1 points")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20, help="epochs per round (every round warm-starts)")
    p.add_argument("--warm-epochs", type=int, default=None,
                   help="epochs for rounds after the first (default: --epochs)")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="train from scratch every round instead of continuing the last model")
    p.add_argument("--out", required=True)
    if model_flags:
        from service.simulate import add_flags

        add_flags(p)


def _run_simulate(a: argparse.Namespace) -> int:
    from service.simulate import SimulationError, from_flags, simulate

    try:
        s = from_flags(a, dataset=a.dataset, data_path=a.data_path, groups=a.groups, models=a.model,
                       strategies=a.strategy, initial=a.initial, per_round=a.per_round, rounds=a.rounds,
                       seeds=a.seeds, epochs=a.epochs, warm_epochs=a.warm_epochs, warm_start=a.warm_start)
        simulate(s, a.out)
    except (SimulationError, ValueError) as e:
        print(f"sae-backend simulate: error: {e}", file=sys.stderr)
        return 2
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the Label Studio ML backend (settings from the environment / .env)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _run_serve(a: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from service.settings import Settings, settings_error_line

    try:
        settings = Settings()
    except (ValidationError, ValueError) as e:
        print(f"sae-backend serve: {settings_error_line(e)}", file=sys.stderr)
        return 2
    import uvicorn

    from service.app import create_app

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=a.host, port=a.port, log_level=a.log_level)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Label Studio + backend + simulated annotators: the live loop on this machine")
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    p.add_argument("--data-path", default=None)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--per-round", type=int, default=20)
    p.add_argument("--tasks", type=int, default=None, help="tasks per project (default: all digits, 2,000 images)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--warm-epochs", type=int, default=None)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--exit", action="store_true", help="stop Label Studio and the backend at the end")


def _run_demo(a: argparse.Namespace) -> int:
    from pathlib import Path

    from connectors.datasets import DatasetError
    from service.demo import DemoSettings, run_demo

    problems = []
    if a.rounds < 1 or a.per_round < 2:
        problems.append("--rounds must be >= 1 and --per-round >= 2")
    if a.tasks is not None and a.tasks - a.tasks // 5 < a.per_round * (a.rounds + 1):
        problems.append(f"--tasks {a.tasks} is too few: a fifth is held out, and the rest must cover "
                        f"{a.rounds + 1} batches of --per-round {a.per_round}")
    for flag, value in (("--epochs", a.epochs), ("--warm-epochs", a.warm_epochs)):
        if value is not None and value < 1:
            problems.append(f"{flag} must be >= 1")
    if problems:
        print(f"sae-backend demo: error: {problems[0]}", file=sys.stderr)
        return 2
    try:
        run_demo(DemoSettings(dataset=a.dataset, data_path=a.data_path, rounds=a.rounds, per_round=a.per_round,
                              tasks=a.tasks, epochs=a.epochs, warm_epochs=a.warm_epochs, out=Path(a.out),
                              exit=a.exit))
    except DatasetError as e:
        print(f"sae-backend demo: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sae-backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    _add_simulate(sub, model_flags=bool(argv) and argv[0] == "simulate")
    _add_serve(sub)
    _add_demo(sub)
    a = parser.parse_args(argv)
    if a.command == "simulate":
        return _run_simulate(a)
    if a.command == "serve":
        return _run_serve(a)
    if a.command == "demo":
        return _run_demo(a)
    parser.error(f"unknown command {a.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
