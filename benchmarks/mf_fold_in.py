"""How well MF's fold-in stands in for a learned user row: validation HR@10 (sampled and
full) of a trained MF artifact's training users scored with their learned rows, and with
the fold-in rule (the mean of their training items' factors) in their place. Prints JSON.

    python benchmarks/mf_fold_in.py --artifact artifacts/primary_mf/model.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from recsys_server.artifact import ModelArtifact
from recsys_server.victims.mf import MFState
from shared.machine import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, required=True)
    args = parser.parse_args()
    artifact = ModelArtifact.load(args.artifact)
    data = artifact.data
    if data is None or artifact.victim.name != "mf":
        raise SystemExit(f"{args.artifact}: not an MF artifact with its serving data")
    state = artifact.victim.serving_state(data)
    assert isinstance(state, MFState)

    def folded_in(users: np.ndarray) -> np.ndarray:
        vectors = np.stack([state.fold_in(state.graph.profile(int(u))) for u in users])
        return vectors @ state.item_factors.T + state.item_bias

    def hr10(score) -> dict[str, float]:
        metrics = data.validation_metrics(score)
        return {protocol: round(metrics[protocol]["HR@10"], 4) for protocol in metrics}

    print(
        json.dumps(
            {
                "artifact": str(args.artifact),
                "validation_hr10_learned_rows": hr10(state.scores),
                "validation_hr10_fold_in_mean": hr10(folded_in),
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
