"""``sae-backend`` command line: simulate, serve, demo. Heavy imports happen per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_simulate(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=20, help="epochs per round (every round warm-starts)")
    p.add_argument("--warm-epochs", type=int, default=None,
                   help="epochs for rounds after the first (default: --epochs)")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--lam", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--labeled-per-batch", type=int, default=64)
    p.add_argument("--channels", type=lambda v: [int(c) for c in _csv(v)], default=[32, 64, 128])
    p.add_argument("--network", default="auto",
                   help="auto, conv, conv-bn / conv-gn (batch- / group-normalised encoder), conv-res (residual) or mlp")
    p.add_argument("--max-shift", type=int, default=0, help="shift training images by up to this many pixels")
    p.add_argument("--flip", action="store_true", help="mirror half the training images left-right (not for digits)")
    p.add_argument("--cutout", type=int, default=0, metavar="SIDE",
                   help="blank a SIDE x SIDE square of every training image (0: off)")
    p.add_argument("--test-time-flip", action="store_true",
                   help="code (or score) an image as the mean of it and its mirror image, for every model")
    p.add_argument("--class-distances", default=None, metavar="FILE",
                   help="JSON distances between class names, as CLASS_DISTANCES (default: all classes equally apart)")
    p.add_argument("--warm-steps", type=int, default=None,
                   help="optimiser steps per warm-started SAE epoch (SAE_WARM_STEPS); default a full pass")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="train from scratch every round instead of continuing the last model")
    p.add_argument("--validation-size", type=int, default=None,
                   help="validation items carved from the training split (choose settings on them)")
    p.add_argument("--initial-strategy", default="random", help="random or typicality (cold start)")
    p.add_argument("--self-training", type=float, default=0.0,
                   help="weight of pseudo-labeled items in the structure term (0: off)")
    p.add_argument("--self-training-threshold", type=float, default=0.9)
    p.add_argument("--consistency", type=float, default=0.0,
                   help="weight of code agreement under two random augmentations (shifts, flips, cutouts), "
                        "relative to the structure term (0: off)")
    p.add_argument("--mixup", type=float, default=0.0,
                   help="weight of blends of labeled pairs pulled to the blend of their class positions (0: off)")
    p.add_argument("--semi-supervised-from", type=int, default=0, metavar="LABELS",
                   help="self-training and consistency stay off below this many labels (their schedule)")
    p.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a query strategy's setting, e.g. until=500 for typicality-margin (repeatable)")
    p.add_argument("--lr", type=float, default=1e-3, help="the SAE's Adam learning rate (the classifier keeps its own)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="the SAE's decoupled weight decay (AdamW; 0: off)")
    p.add_argument("--lr-schedule", default="constant",
                   help="the SAE's Adam step within a round: constant, or cosine (annealed to zero every round)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep a moving average of the SAE's weights over a round, with this decay (0: off)")
    p.add_argument("--mean-teacher", action="store_true",
                   help="the consistency term's second view is encoded by the averaged weights (needs --ema-decay)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)


def _run_simulate(a: argparse.Namespace) -> int:
    from service.simulate import SimulationError, SimulationSettings, parse_options, simulate

    try:
        s = SimulationSettings(dataset=a.dataset, data_path=a.data_path, groups=a.groups, models=a.model,
                               strategies=a.strategy, initial=a.initial, per_round=a.per_round, rounds=a.rounds,
                               seeds=a.seeds, pool_size=a.pool_size, test_size=a.test_size, epochs=a.epochs,
                               warm_epochs=a.warm_epochs, latent_dim=a.latent_dim, lam=a.lam,
                               batch_size=a.batch_size, labeled_per_batch=a.labeled_per_batch, channels=a.channels,
                               network=a.network, max_shift=a.max_shift, flip=a.flip, cutout=a.cutout,
                               warm_start=a.warm_start,
                               warm_steps=a.warm_steps, device=a.device, validation_size=a.validation_size,
                               initial_strategy=a.initial_strategy, self_training=a.self_training,
                               self_training_threshold=a.self_training_threshold, consistency=a.consistency,
                               semi_supervised_from=a.semi_supervised_from, test_time_flip=a.test_time_flip,
                               mixup=a.mixup, lr=a.lr, weight_decay=a.weight_decay, lr_schedule=a.lr_schedule,
                               ema_decay=a.ema_decay, mean_teacher=a.mean_teacher,
                               class_distances=a.class_distances, strategy_options=parse_options(a.strategy_option))
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
    _add_simulate(sub)
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
