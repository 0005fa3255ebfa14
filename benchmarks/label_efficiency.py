"""Label-efficiency benchmark: chosen model+strategy pairs, 100 -> 1,000 labels, several seeds.

Writes ``curve.json`` in the simulator's format, after every run, so a run cut short
still leaves its finished curves. Run one process per (data set, seed) to use a GPU's
spare capacity; ``report.py`` merges the files.

    python benchmarks/label_efficiency.py --dataset fashion-mnist --seeds 0 \
        --runs sae+margin,sae+random,classifier+margin,classifier+random,ae+margin --out runs/fm10-s0
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latent_heads import probe_heads
from machine import where

from connectors.datasets import load_dataset
from model.networks import NETWORK_KINDS
from model.sae import LR_SCHEDULES
from service.simulate import SimulationError, SimulationSettings, class_distances, parse_options, run_one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-path", default=None)
    p.add_argument("--groups", default=None)
    p.add_argument("--runs", default="sae+margin,classifier+random,sae+random,classifier+margin,ae+margin")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warm-epochs", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.9)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--labeled-per-batch", type=int, default=64)
    p.add_argument("--channels", default="32,64,128")
    p.add_argument("--network", default="auto", choices=NETWORK_KINDS)
    p.add_argument("--max-shift", type=int, default=0)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--cutout", type=int, default=0, help="blank a square of this side in every training image")
    p.add_argument("--test-time-flip", action="store_true")
    p.add_argument("--class-distances", default=None, metavar="FILE",
                   help="JSON distances between the data set's class names (default: all equal)")
    p.add_argument("--members", type=int, default=1,
                   help="autoencoders trained from different seeds, their codes read side by side (an ensemble)")
    p.add_argument("--cold-start", action="store_true", help="train from scratch every round")
    p.add_argument("--validation-size", type=int, default=None)
    p.add_argument("--initial-strategy", default="random")
    p.add_argument("--typical-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the typicality start's autoencoder alone, e.g. epochs=20 or latent_dim=32 "
                        "(repeatable)")
    p.add_argument("--init-from-start", action="store_true",
                   help="the SAE's first training starts from the typicality start's autoencoder, not from scratch")
    p.add_argument("--init-features-only", action="store_true",
                   help="with --init-from-start: the linear maps to and from the code start fresh")
    p.add_argument("--self-training", type=float, default=0.0)
    p.add_argument("--self-training-threshold", type=float, default=0.9)
    p.add_argument("--consistency", type=float, default=0.0)
    p.add_argument("--mixup", type=float, default=0.0,
                   help="weight of blended labeled pairs (SAE: against blended targets; classifier: blended labels)")
    p.add_argument("--semi-supervised-from", type=int, default=0,
                   help="self-training and consistency stay off below this many labels")
    p.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a query strategy's setting, e.g. until=500 for typicality-margin (repeatable)")
    p.add_argument("--warm-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="the SAE's Adam learning rate (the classifier keeps its own)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="the SAE's decoupled weight decay (AdamW)")
    p.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                   help="the SAE's Adam step within a round: constant, or cosine annealing to zero")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep a moving average of the SAE's weights over a round, with this decay (0: off)")
    p.add_argument("--mean-teacher", action="store_true",
                   help="the consistency term's second view is encoded by the averaged weights (needs --ema-decay)")
    p.add_argument("--contrastive", type=float, default=0.0,
                   help="weight of a SimCLR loss between each image's code and its random crop's (0: off)")
    p.add_argument("--pool-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--probe-heads", action="store_true",
                   help="also read other classifiers on the latent codes every round (latent_heads.py)")
    p.add_argument("--tag", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s = SimulationSettings(dataset=a.dataset, data_path=a.data_path, groups=a.groups, initial=a.initial,
                           per_round=a.per_round, rounds=a.rounds, seeds=len(a.seeds.split(",")),
                           pool_size=a.pool_size, test_size=a.test_size, epochs=a.epochs,
                           warm_epochs=a.warm_epochs, latent_dim=a.latent_dim, lam=a.lam,
                           labeled_per_batch=a.labeled_per_batch, device=a.device,
                           network=a.network, max_shift=a.max_shift, flip=a.flip, cutout=a.cutout,
                           test_time_flip=a.test_time_flip, members=a.members, class_distances=a.class_distances,
                           warm_start=not a.cold_start,
                           channels=[int(c) for c in a.channels.split(",")], validation_size=a.validation_size,
                           initial_strategy=a.initial_strategy,
                           typical_params=parse_options(a.typical_param, "--typical-param"),
                           init_from_start=a.init_from_start, init_features_only=a.init_features_only,
                           self_training=a.self_training,
                           self_training_threshold=a.self_training_threshold, warm_steps=a.warm_steps,
                           consistency=a.consistency, semi_supervised_from=a.semi_supervised_from, mixup=a.mixup,
                           lr=a.lr, weight_decay=a.weight_decay, lr_schedule=a.lr_schedule, ema_decay=a.ema_decay,
                           mean_teacher=a.mean_teacher, contrastive=a.contrastive,
                           strategies=sorted({r.split("+")[1] for r in a.runs.split(",")}),
                           strategy_options=parse_options(a.strategy_option))
    s.validate()
    ds = load_dataset(a.dataset, a.data_path, a.groups)
    distances = class_distances(s, ds)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    result = {"settings": asdict(s) | {"class_names": ds.class_names, "tag": a.tag, "runs": a.runs},
              "where": where(), "runs": runs}
    if distances is not None:
        result["settings"]["class_distance_matrix"] = distances.tolist()
    for seed in (int(v) for v in a.seeds.split(",")):
        for pair in a.runs.split(","):
            model, strategy = pair.split("+")
            curve = run_one(ds, s, model, strategy, seed, log=lambda m: print(m, flush=True),
                            probe=probe_heads if a.probe_heads and model != "classifier" else None)
            runs.append({"model": model, "strategy": strategy, "seed": seed, "curve": curve, "tag": a.tag})
            (out / "curve.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    try:
        main()
    except SimulationError as e:  # a bad setting: one line, not a traceback
        sys.exit(f"label_efficiency.py: {e}")
