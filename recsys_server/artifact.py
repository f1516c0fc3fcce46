"""A trained model as one file: the victim's family, weights and config, the scenario
fingerprint, metrics and (for serving) the target data it runs on.

Loading checks the fingerprint against the scenario it is used with and refuses a
mismatch, since a model trained on other data would answer for the wrong catalogue. The
bundled data (training graph, splits, content features, pretend-user pool, evaluation
users) make the file all the service needs: one file to mount, and it cannot be paired
with the wrong scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_server.data import TargetData
from recsys_server.victims.base import Victim
from recsys_server.victims.registry import VICTIMS
from shared.atomic import staged_file
from shared.errors import CopyAttackError

# 3: the victim's family is named, its fields under "model"; version 2 was PinSage only
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)


class ArtifactError(CopyAttackError):
    """A model file that is missing, unreadable, or made for another scenario."""


@dataclass
class ModelArtifact:
    victim: Victim
    scenario_fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)
    data: TargetData | None = None
    # what the weights depend on (recsys_server.prepare.training_key), kept inside the
    # file so that replacing the file can never leave a stale key beside it
    training_key: str | None = None

    @cached_property
    def weights_fingerprint(self) -> str:
        """sha256 of the weights: which model is served, whatever its file is called."""
        return self.victim.fingerprint()

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, renamed into place."""
        payload = {
            "format_version": FORMAT_VERSION,
            "victim": self.victim.name,
            "model": self.victim.to_payload(),
            "scenario_fingerprint": self.scenario_fingerprint,
            "metrics": self.metrics,
            "data": None if self.data is None else _pack(self.data),
            "training_key": self.training_key,
        }
        with staged_file(path) as staging:
            torch.save(payload, staging)

    @classmethod
    def load(cls, path: Path, expected_fingerprint: str | None = None) -> ModelArtifact:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"no model artifact at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file: say which and why
            raise ArtifactError(f"{path}: not a model artifact ({exc})") from None
        if payload.get("format_version") not in READABLE_VERSIONS:
            raise ArtifactError(f"{path}: format version {payload.get('format_version')}")
        family = VICTIMS.get(payload.get("victim", "pinsage"))
        if family is None:
            raise ArtifactError(
                f"{path}: a model of victim {payload['victim']!r}, which this version does "
                f"not know (it knows {', '.join(sorted(VICTIMS))})"
            )
        fingerprint = payload["scenario_fingerprint"]
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise ArtifactError(
                f"{path} was trained on scenario {fingerprint[:16]}, not on this scenario "
                f"({expected_fingerprint[:16]}); train a model for it with `recsys-server train`"
            )
        # version 2 kept PinSage's fields at the top level
        victim = family.from_payload(payload.get("model", payload))
        data = None if payload.get("data") is None else _unpack(payload["data"], fingerprint)
        return cls(victim, fingerprint, payload["metrics"], data, payload.get("training_key"))


def _pack(data: TargetData) -> dict[str, Any]:
    # tensors, not numpy arrays: ``torch.load(weights_only=True)`` accepts only those
    arrays = {name: torch.from_numpy(np.ascontiguousarray(getattr(data, name)))
              for name in TargetData.ARRAYS}  # fmt: skip
    return {**arrays, "n_users": data.n_users, "n_items": data.n_items}


def _unpack(packed: dict[str, Any], fingerprint: str) -> TargetData:
    arrays = {name: packed[name].numpy() for name in TargetData.ARRAYS}
    return TargetData(n_users=packed["n_users"], n_items=packed["n_items"],
                      fingerprint=fingerprint, **arrays)  # fmt: skip
