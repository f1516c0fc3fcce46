"""Load a (target, source) pair by name: two registered datasets, or one synthetic pair."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from shared.datasets.fetch import fetch_dataset
from shared.datasets.registry import get_spec, load_dataset
from shared.datasets.types import Dataset
from shared.errors import DatasetNotFoundError, UnknownDatasetError
from shared.synthetic import generate_pair, preset

SYNTHETIC = "synthetic"

# (target, source) of the named pairs: the paper's direction (long source profiles) on the
# real platforms, its reverse, the synthetic preset that mirrors the paper's ML10M-FX, and
# a tiny synthetic pair on which the whole stack runs in about a minute (a smoke test)
NAMED_PAIRS: dict[str, tuple[str, str]] = {
    "primary": ("movietweetings-100k", "ml-latest-small"),
    "reverse": ("ml-latest-small", "movietweetings-100k"),
    "synthetic": ("synthetic:paper", "synthetic:paper"),
    "tiny": ("synthetic:tiny", "synthetic:tiny"),
}


@dataclass(frozen=True)
class SyntheticOptions:
    domain_shift: float | None = None  # None: the preset's own
    seed: int = 0


def synthetic_preset_name(name: str) -> str | None:
    """``"synthetic:paper"`` -> ``"paper"``; ``"synthetic"`` -> ``"small"``; else None."""
    if name == SYNTHETIC:
        return "small"
    if name.startswith(SYNTHETIC + ":"):
        return name.split(":", 1)[1]
    return None


def load_pair(
    target: str,
    source: str,
    data_dir: Path,
    *,
    fetch_missing: bool = False,
    synthetic: SyntheticOptions | None = None,
) -> tuple[Dataset, Dataset]:
    """Read (or generate) both platforms; missing real files are fetched if asked."""
    target_preset, source_preset = synthetic_preset_name(target), synthetic_preset_name(source)
    if target_preset is not None or source_preset is not None:
        if target_preset is None or target_preset != source_preset:
            raise UnknownDatasetError(
                "a synthetic target needs the same synthetic source (one generated pair): "
                f"got --target {target} --source {source}"
            )
        options = synthetic or SyntheticOptions()
        try:
            config = replace(preset(target_preset), seed=options.seed)
            if options.domain_shift is not None:
                config = replace(config, domain_shift=options.domain_shift)
        except ValueError as exc:
            raise UnknownDatasetError(str(exc)) from None
        return generate_pair(config, name=f"{SYNTHETIC}:{target_preset}")
    if target == source:
        raise UnknownDatasetError(f"target and source are the same dataset: {target}")
    return _load(target, data_dir, fetch_missing), _load(source, data_dir, fetch_missing)


def _load(name: str, data_dir: Path, fetch_missing: bool) -> Dataset:
    spec = get_spec(name)
    try:
        return load_dataset(name, data_dir)
    except DatasetNotFoundError:
        if not fetch_missing:
            raise
    fetch_dataset(spec, data_dir)
    return load_dataset(name, data_dir)
