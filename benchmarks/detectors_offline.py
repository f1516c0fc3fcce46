"""The server's shilling detectors on a scenario, offline (no server, no attack): each
fitted on half of the target's real users, its false-positive rate on the other half,
and its ROC-AUC of 90 planted profiles of each kind (the generated attacks, and source
profiles copied whole or cut to 40% around the target, as TargetAttack does) on 30 cold
targets against those held-out real users; the distribution distances of each kind.
Seeded; prints JSON.

    python benchmarks/detectors_offline.py --scenario artifacts/primary_rich/scenario
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys_server.detection.detectors import DETECTORS, fitted
from recsys_server.detection.features import Profiles, distribution_distances
from recsys_server.graph import InteractionGraph
from shared.fake_profiles import FAKE_KINDS, PlatformStats, fake_profile, segment_of
from shared.machine import machine
from shared.profiles import crop_around_target
from shared.scenario import load_attacker_view, load_scenario


def planted(folder: Path, stats: PlatformStats, seed: int) -> dict[str, Profiles]:
    view = load_attacker_view(folder)
    rng = np.random.default_rng(seed)
    targets = view.cold_targets[:30]
    out: dict[str, list[np.ndarray]] = {kind: [] for kind in FAKE_KINDS}
    out |= {"copy40": [], "copy100": []}
    for target in targets:
        segment = segment_of(target, view.source_indptr, view.source_items, view.n_items)
        for kind in FAKE_KINDS:
            out[kind] += [fake_profile(kind, target, stats, rng, segment) for _ in range(3)]
        for user in rng.choice(view.holders(target), 3):
            profile = view.source_profile(int(user))
            out["copy40"].append(crop_around_target(profile, target, 0.4))
            out["copy100"].append(profile)
    return {kind: Profiles.of(profiles) for kind, profiles in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    graph = InteractionGraph(scenario.train, scenario.n_users, scenario.n_items)
    users = np.arange(scenario.n_users)
    users = users[graph.profile_length(users) > 0]
    real = Profiles(*graph.profiles_of(users))
    order = np.random.default_rng(args.seed).permutation(len(real))
    fit, held = real.subset(order[: len(order) // 2]), real.subset(order[len(order) // 2 :])
    stats = PlatformStats(real.lengths, graph.train_degree)
    attacks = planted(args.scenario, stats, args.seed)
    result: dict[str, object] = {
        "scenario": str(args.scenario),
        "real_users": len(real),
        "distances": {
            kind: dict(
                zip(("js", "tv"), distribution_distances(p, real, stats.popularity), strict=True)
            )
            for kind, p in attacks.items()
        },
    }
    for name in DETECTORS:
        started = time.perf_counter()
        detector = fitted(name, fit, PlatformStats(fit.lengths, stats.popularity), args.seed)
        seconds = time.perf_counter() - started
        held_scores = detector.score(held)
        row: dict[str, object] = {
            "fit_seconds": round(seconds, 1),
            "held_out_false_positive_rate": float(np.mean(held_scores > detector.threshold)),
        }
        for kind, profiles in attacks.items():
            scores = detector.score(profiles)
            truth = np.r_[np.zeros(len(held_scores)), np.ones(len(scores))]
            row[kind] = {
                "roc_auc": round(float(roc_auc_score(truth, np.r_[held_scores, scores])), 3),
                "recall": round(float(np.mean(scores > detector.threshold)), 3),
            }
        result[name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    result["machine"] = machine()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
