"""A scenario: everything one experiment needs, built deterministically from a seed.

Layout on disk (who may read what):

- ``server/split.npz``: target interactions split 80/10/10 (train/valid/test), the pool
  of users pretend users are drawn from, and the evaluation users (disjoint);
- ``attacker/source_profiles.npz``: source-domain profiles mapped onto target item ids;
- ``attacker/target_items.json``: the items to promote (cold ones and popularity deciles);
- ``public/catalogue.csv``: the target catalogue any attacker could see;
- ``manifest.json``: parameters, dataset fingerprints, counts, per-file sha256 and the
  scenario fingerprint (a hash of all of these).

Target users and items are renumbered 0..n-1 in order of their platform ids.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.alignment import Alignment, align_catalogues
from shared.atomic import staged_directory
from shared.datasets.registry import sha256_file
from shared.datasets.types import Dataset, Movie
from shared.errors import EmptyResultError, ScenarioError
from shared.preprocess import Interactions, liked_interactions, profile_bounds

FORMAT_VERSION = 2  # 2: target_items.json lists the whole cold pool
MANIFEST = "manifest.json"
_SPLIT_FILE = "server/split.npz"
_SOURCE_FILE = "attacker/source_profiles.npz"
_TARGETS_FILE = "attacker/target_items.json"
_CATALOGUE_FILE = "public/catalogue.csv"


class EmptyDecileWarning(UserWarning):
    """A popularity decile of the target holds no item of the source platform."""


@dataclass(frozen=True)
class ScenarioConfig:
    """Every knob of a scenario; the defaults follow the paper where the data allow."""

    seed: int = 0
    top_rating_only: bool = False  # the paper's filter; default keeps "liked" ratings
    target_like_threshold: float | None = None  # None: the dataset's own default
    source_like_threshold: float | None = None
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    n_target_items: int = 50
    cold_max_interactions: int = 10  # target items have fewer target interactions than this
    # cold targets are held by at least this many source users (1: any holder; a higher
    # value draws targets that leave the attacker holders to choose between)
    min_source_holders: int = 1
    items_per_decile: int = 5  # popularity-decile selection (paper Fig. 4)
    pretend_pool_size: int = 100
    pretend_min_train: int = 3  # an "established" account has this many training items
    # opt-in: a title may also match with the year off by up to this much (film festival
    # vs release year); 0 keeps exact years (shared.alignment)
    year_tolerance: int = 0

    def __post_init__(self) -> None:
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-9:
            raise ValueError(f"split must be three non-negative shares summing to 1: {self.split}")
        for name in (
            "n_target_items",
            "cold_max_interactions",
            "pretend_pool_size",
            "min_source_holders",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.year_tolerance < 0:
            raise ValueError(f"year_tolerance must be 0 or more, got {self.year_tolerance}")


@dataclass
class Scenario:
    """A built scenario, in memory. Arrays use target user / item indices."""

    target_name: str
    source_name: str
    config: ScenarioConfig
    catalogue: list[Movie]  # index = target item id
    user_raw_ids: np.ndarray
    train: np.ndarray  # (n, 3) int64 rows: user, item, timestamp
    valid: np.ndarray
    test: np.ndarray
    pretend_pool: np.ndarray
    eval_users: np.ndarray
    source_indptr: np.ndarray  # CSR over source users
    source_items: np.ndarray  # target item ids, chronological within a profile
    source_times: np.ndarray
    source_user_raw_ids: np.ndarray
    cold_targets: list[int]
    decile_targets: dict[int, list[int]]
    # every cold item held by a source user, the evaluated targets among them: the pool
    # an attacker may train on (minus the targets it is judged on)
    cold_pool: list[int]
    alignment: dict[str, int]
    datasets: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_raw_ids)

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    def source_profile(self, index: int) -> np.ndarray:
        return self.source_items[self.source_indptr[index] : self.source_indptr[index + 1]]

    def table1(self) -> dict[str, Any]:
        """The paper's Table 1 for this pair, plus what tells the two regimes apart."""
        lengths = np.diff(self.source_indptr)
        holders = source_holders(self.source_indptr, self.source_items, self.n_items)
        n_target = len(self.train) + len(self.valid) + len(self.test)
        return {
            "target": self.target_name,
            "source": self.source_name,
            "target_users": self.n_users,
            "target_items": self.n_items,
            "target_interactions": n_target,
            "source_users": len(lengths),
            "overlapping_items": int(np.unique(self.source_items).size),
            "source_interactions": int(lengths.sum()),
            "source_profile_length_median": float(np.median(lengths)),
            "source_profile_length_mean": round(float(lengths.mean()), 2),
            "source_profile_length_max": int(lengths.max()),
            "cold_items_by_min_source_holders": {
                str(m): int((holders[self.cold_pool] >= m).sum()) for m in HOLDER_THRESHOLDS
            },
            "alignment": self.alignment,
        }


def build_scenario(target: Dataset, source: Dataset, config: ScenarioConfig) -> Scenario:
    """Build a scenario in memory; raises :class:`EmptyResultError` when nothing is left."""
    alignment = align_catalogues(
        _rated_movies(target), _rated_movies(source), year_tolerance=config.year_tolerance
    )
    target_rows = liked_interactions(
        target, top_rating_only=config.top_rating_only, threshold=config.target_like_threshold
    )
    source_rows = liked_interactions(
        source, top_rating_only=config.top_rating_only, threshold=config.source_like_threshold
    )

    user_raw, users = np.unique(target_rows.user, return_inverse=True)
    item_raw, items = np.unique(target_rows.item, return_inverse=True)
    catalogue = [target.movies.get(int(raw), Movie(int(raw), "")) for raw in item_raw]
    rng = np.random.default_rng(config.seed)
    rows = np.stack([users, items, target_rows.timestamp], axis=1).astype(np.int64)
    train, valid, test = _random_split(rows, config.split, rng)

    source_profiles = _map_source(source_rows, alignment, item_raw)
    if source_profiles is None:
        raise EmptyResultError(
            f"no {source.name} profile holds a {target.name} item after alignment "
            f"({alignment.report()['matched']} catalogue matches)"
        )
    indptr, source_items, source_times, source_users = source_profiles
    holders = source_holders(indptr, source_items, len(item_raw))
    in_source = holders > 0
    popularity = np.bincount(rows[:, 1], minlength=len(item_raw))
    train_popularity = np.bincount(train[:, 1], minlength=len(item_raw))
    cold_pool = np.flatnonzero(in_source & (popularity < config.cold_max_interactions))
    cold = _cold_targets(cold_pool, holders, config, rng)
    deciles = _decile_targets(train_popularity, in_source, config, rng)
    pool, eval_users = _user_pools(train, len(user_raw), config, rng)
    return Scenario(
        target_name=target.name,
        source_name=source.name,
        config=config,
        catalogue=catalogue,
        user_raw_ids=user_raw,
        train=train,
        valid=valid,
        test=test,
        pretend_pool=pool,
        eval_users=eval_users,
        source_indptr=indptr,
        source_items=source_items,
        source_times=source_times,
        source_user_raw_ids=source_users,
        cold_targets=cold,
        decile_targets=deciles,
        cold_pool=[int(i) for i in cold_pool],
        alignment=alignment.report(),
        datasets={**target.fingerprint, **source.fingerprint},
    )


def _rated_movies(dataset: Dataset) -> dict[int, Movie]:
    """Catalogue entries with at least one rating: an unrated movie is on neither platform."""
    rated = set(np.unique(dataset.ratings.item).tolist())
    return {raw: movie for raw, movie in dataset.movies.items() if raw in rated}


def _random_split(
    rows: np.ndarray, shares: tuple[float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random interaction-level split (the paper's 80/10/10), each part sorted by user, time."""
    order = rng.permutation(len(rows))
    n_train = round(shares[0] * len(rows))
    n_valid = round(shares[1] * len(rows))
    train, valid, test = np.split(order, [n_train, n_train + n_valid])
    return rows[np.sort(train)], rows[np.sort(valid)], rows[np.sort(test)]


def _map_source(
    rows: Interactions, alignment: Alignment, target_item_raw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Source profiles restricted to overlapping items, as target item ids (CSR);
    None when no source interaction is on an overlapping item."""
    index_of = {int(raw): index for index, raw in enumerate(target_item_raw)}
    pairs = [
        (source, index_of[target])
        for source, target in alignment.source_to_target.items()
        if target in index_of
    ]
    if not pairs:
        return None
    source_raw, target_index = (np.array(column) for column in zip(*sorted(pairs), strict=True))
    position = np.searchsorted(source_raw, rows.item).clip(0, len(source_raw) - 1)
    keep = source_raw[position] == rows.item
    if not keep.any():
        return None
    user, items, times = rows.user[keep], target_index[position[keep]], rows.timestamp[keep]
    # a movie listed twice on the source platform maps both entries to one target item:
    # a profile holds it once, at its first interaction
    _, first = np.unique(np.stack([user, items], axis=1), axis=0, return_index=True)
    if len(first) < len(user):
        once = np.sort(first)
        user, items, times = user[once], items[once], times[once]
    bounds = profile_bounds(user)
    return bounds, items, times, user[bounds[:-1]]


def source_holders(indptr: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Per target item, how many source profiles hold it (a profile counts once)."""
    users = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    pairs = np.unique(users.astype(np.int64) * n_items + items)
    return np.bincount(pairs % n_items, minlength=n_items)


def draw_targets(pool: list[int], count: int, seed: int) -> list[int]:
    """``count`` of a scenario's targets in a seeded random order: its first ones are no
    sample (in id order, on MovieTweetings, they are the oldest films), and neither are
    the first ones of a sorted draw."""
    order = np.random.default_rng(seed).permutation(len(pool))[:count]
    return [int(pool[i]) for i in order]


# Table 1's counts of cold items by the least number of source holders
HOLDER_THRESHOLDS = (1, 5, 10, 20, 30, 50)


def _cold_targets(
    cold_pool: np.ndarray, holders: np.ndarray, config: ScenarioConfig, rng: np.random.Generator
) -> list[int]:
    eligible = cold_pool[holders[cold_pool] >= config.min_source_holders]
    if len(eligible) == 0:
        raise EmptyResultError(
            f"no target item has fewer than {config.cold_max_interactions} interactions and "
            f"appears in at least {config.min_source_holders} source profile(s) "
            f"({len(cold_pool)} cold items appear in one)"
        )
    count = min(config.n_target_items, len(eligible))
    return sorted(int(i) for i in rng.choice(eligible, size=count, replace=False))


def _decile_targets(
    popularity: np.ndarray, in_source: np.ndarray, config: ScenarioConfig, rng: np.random.Generator
) -> dict[int, list[int]]:
    """Decile 0 holds the least popular tenth of the catalogue (by training interactions)."""
    ranked = np.argsort(popularity, kind="stable")
    deciles: dict[int, list[int]] = {}
    for decile, members in enumerate(np.array_split(ranked, 10)):
        eligible = members[in_source[members]]
        if not len(eligible):
            warnings.warn(
                f"popularity decile {decile} ({len(members)} target items) has no item that "
                "a source profile holds: it has no targets (Fig. 4 will miss it)",
                EmptyDecileWarning,
                stacklevel=3,
            )
        count = min(config.items_per_decile, len(eligible))
        chosen: np.ndarray | list[int] = (
            rng.choice(eligible, size=count, replace=False) if count else []
        )
        deciles[decile] = sorted(int(i) for i in chosen)
    return deciles


def _user_pools(
    train: np.ndarray, n_users: int, config: ScenarioConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pretend-user pool (established accounts) and the disjoint evaluation users."""
    train_counts = np.bincount(train[:, 0], minlength=n_users)
    established = np.flatnonzero(train_counts >= config.pretend_min_train)
    if len(established) == 0:
        raise EmptyResultError(
            f"no target user has {config.pretend_min_train} training interactions"
        )
    size = min(config.pretend_pool_size, len(established) // 2 or 1)
    pool = np.sort(rng.choice(established, size=size, replace=False))
    return pool, np.setdiff1d(np.arange(n_users), pool)


# --- on disk -----------------------------------------------------------------------------


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed member dates, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _catalogue_csv(catalogue: list[Movie]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["item_id", "raw_id", "title", "alt_titles", "year", "imdb_id", "genres"])
    for index, movie in enumerate(catalogue):
        writer.writerow(
            [
                index,
                movie.raw_id,
                movie.title,
                "|".join(movie.alt_titles),
                "" if movie.year is None else movie.year,
                "" if movie.imdb_id is None else f"tt{movie.imdb_id:07d}",
                "|".join(movie.genres),
            ]
        )
    return text.getvalue().encode()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


# settings added after scenarios were first fingerprinted, with the value they had
# before: recorded only when set otherwise, so that earlier scenarios (and the models
# trained on them) keep their fingerprints
_LATER_SETTINGS = {"year_tolerance": 0}


def _recorded_config(config: ScenarioConfig) -> dict[str, Any]:
    recorded = asdict(config)
    for name, before in _LATER_SETTINGS.items():
        if recorded[name] == before:
            del recorded[name]
    return recorded


def _encode(scenario: Scenario) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The scenario's files and manifest; sets ``scenario.fingerprint``."""
    files = {
        _SPLIT_FILE: _npz_bytes(
            {
                "train": scenario.train,
                "valid": scenario.valid,
                "test": scenario.test,
                "pretend_pool": scenario.pretend_pool,
                "eval_users": scenario.eval_users,
                "user_raw_ids": scenario.user_raw_ids,
            }
        ),
        _SOURCE_FILE: _npz_bytes(
            {
                "indptr": scenario.source_indptr,
                "items": scenario.source_items,
                "times": scenario.source_times,
                "user_raw_ids": scenario.source_user_raw_ids,
            }
        ),
        _TARGETS_FILE: _json_bytes(
            {
                "cold": scenario.cold_targets,
                "cold_pool": scenario.cold_pool,
                "deciles": {str(k): v for k, v in scenario.decile_targets.items()},
                "rule": {
                    "cold": f"fewer than {scenario.config.cold_max_interactions} target "
                    f"interactions, in at least {scenario.config.min_source_holders} source "
                    "profile(s)",
                    "cold_pool": "every item with fewer than "
                    f"{scenario.config.cold_max_interactions} target interactions in at least "
                    "one source profile (the cold targets among them)",
                    "deciles": "popularity deciles of training interactions, 0 = least popular",
                },
            }
        ),
        _CATALOGUE_FILE: _catalogue_csv(scenario.catalogue),
    }
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    manifest = {
        "format_version": FORMAT_VERSION,
        "target": scenario.target_name,
        "source": scenario.source_name,
        "config": _recorded_config(scenario.config),
        "datasets": scenario.datasets,
        "counts": scenario.table1(),
        "files": hashes,
    }
    scenario.fingerprint = hashlib.sha256(_json_bytes(manifest)).hexdigest()
    manifest["fingerprint"] = scenario.fingerprint
    return files, manifest


def save_scenario(
    scenario: Scenario, out: Path, *, force: bool = False, unless_current: bool = False
) -> bool:
    """Write ``scenario`` to ``out`` atomically (sets ``scenario.fingerprint``). With
    ``unless_current``, a folder already holding this fingerprint is kept as it is (a
    missing, torn or older one is replaced). Returns whether it wrote."""
    files, manifest = _encode(scenario)
    if unless_current:
        try:
            if read_manifest(out).get("fingerprint") == manifest["fingerprint"]:
                return False
        except ScenarioError:
            pass
        force = True
    with staged_directory(Path(out), replace=force) as staging:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        (staging / MANIFEST).write_bytes(_json_bytes(manifest))
    return True


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ScenarioError(f"{folder} is not a scenario: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ScenarioError(
            f"{path}: format version {manifest.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return manifest


def load_scenario(folder: Path) -> Scenario:
    """Read a scenario written by :func:`save_scenario`, checking every file's sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ScenarioError(f"{path} is missing")
        if sha256_file(path) != expected:
            raise ScenarioError(f"{path} does not match the manifest (changed after the build?)")
    split = np.load(folder / _SPLIT_FILE)
    source = np.load(folder / _SOURCE_FILE)
    targets = json.loads((folder / _TARGETS_FILE).read_text())
    config = manifest["config"]
    config["split"] = tuple(config["split"])
    return Scenario(
        target_name=manifest["target"],
        source_name=manifest["source"],
        config=ScenarioConfig(**config),
        catalogue=_read_catalogue(folder / _CATALOGUE_FILE),
        user_raw_ids=split["user_raw_ids"],
        train=split["train"],
        valid=split["valid"],
        test=split["test"],
        pretend_pool=split["pretend_pool"],
        eval_users=split["eval_users"],
        source_indptr=source["indptr"],
        source_items=source["items"],
        source_times=source["times"],
        source_user_raw_ids=source["user_raw_ids"],
        cold_targets=targets["cold"],
        decile_targets={int(k): v for k, v in targets["deciles"].items()},
        cold_pool=targets["cold_pool"],
        alignment=manifest["counts"]["alignment"],
        datasets=manifest["datasets"],
        fingerprint=manifest["fingerprint"],
    )


@dataclass(frozen=True)
class AttackerView:
    """What the attacker may read of a scenario: the source profiles (mapped to target
    item ids), the target items to promote, and the public catalogue. Never the target's
    interactions, splits or users."""

    fingerprint: str
    source_indptr: np.ndarray
    source_items: np.ndarray
    source_times: np.ndarray
    cold_targets: list[int]
    decile_targets: dict[int, list[int]]
    cold_pool: list[int]  # every cold item some source user holds (targets included)
    n_items: int

    @property
    def n_source_users(self) -> int:
        return len(self.source_indptr) - 1

    def source_profile(self, index: int) -> np.ndarray:
        return self.source_items[self.source_indptr[index] : self.source_indptr[index + 1]]

    def holders(self, item: int) -> np.ndarray:
        """Source users whose profile holds ``item``."""
        rows = np.repeat(np.arange(self.n_source_users), np.diff(self.source_indptr))
        return np.unique(rows[self.source_items == item])

    def holder_counts(self) -> np.ndarray:
        """Per item, how many source profiles hold it."""
        return source_holders(self.source_indptr, self.source_items, self.n_items)


def load_attacker_view(folder: Path) -> AttackerView:
    """The attacker's files of a scenario, each checked against the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name in (_SOURCE_FILE, _TARGETS_FILE, _CATALOGUE_FILE):
        path = folder / name
        if not path.is_file():
            raise ScenarioError(f"{path} is missing")
        if sha256_file(path) != manifest["files"][name]:
            raise ScenarioError(f"{path} does not match the manifest (changed after the build?)")
    source = np.load(folder / _SOURCE_FILE)
    targets = json.loads((folder / _TARGETS_FILE).read_text())
    return AttackerView(
        fingerprint=manifest["fingerprint"],
        source_indptr=source["indptr"],
        source_items=source["items"],
        source_times=source["times"],
        cold_targets=targets["cold"],
        decile_targets={int(k): v for k, v in targets["deciles"].items()},
        cold_pool=targets["cold_pool"],
        n_items=manifest["counts"]["target_items"],
    )


def _read_catalogue(path: Path) -> list[Movie]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Movie(
            raw_id=int(row["raw_id"]),
            title=row["title"],
            year=int(row["year"]) if row["year"] else None,
            genres=tuple(g for g in row["genres"].split("|") if g),
            imdb_id=int(row["imdb_id"][2:]) if row["imdb_id"] else None,
            alt_titles=tuple(t for t in row["alt_titles"].split("|") if t),
        )
        for row in rows
    ]
