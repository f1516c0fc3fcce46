from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shared.datasets.types import Dataset, Ratings
from shared.errors import CopyAttackError, EmptyResultError, ScenarioError
from shared.scenario import (
    EmptyDecileWarning,
    ScenarioConfig,
    _decile_targets,
    build_scenario,
    load_scenario,
    read_manifest,
    save_scenario,
)


def test_split_is_80_10_10_and_covers_every_interaction(tiny_pair: tuple[Dataset, Dataset]) -> None:
    scenario = build_scenario(*tiny_pair, ScenarioConfig(seed=1))
    parts = [scenario.train, scenario.valid, scenario.test]
    total = sum(len(p) for p in parts)
    assert [round(len(p) / total, 2) for p in parts] == [0.8, 0.1, 0.1]
    pairs = np.concatenate(parts)[:, :2]
    assert len(np.unique(pairs, axis=0)) == total  # no interaction in two parts
    assert pairs[:, 1].max() < scenario.n_items and pairs[:, 0].max() < scenario.n_users


def test_same_seed_same_scenario_other_seed_other_split(
    tiny_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    a = build_scenario(*tiny_pair, ScenarioConfig(seed=3))
    b = build_scenario(*tiny_pair, ScenarioConfig(seed=3))
    c = build_scenario(*tiny_pair, ScenarioConfig(seed=4))
    save_scenario(a, tmp_path / "a")
    save_scenario(b, tmp_path / "b")
    save_scenario(c, tmp_path / "c")
    assert a.fingerprint == b.fingerprint != c.fingerprint
    for name in ("server/split.npz", "attacker/source_profiles.npz", "public/catalogue.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not np.array_equal(a.test, c.test)


def test_pools_and_target_items_follow_their_rules(tiny_pair: tuple[Dataset, Dataset]) -> None:
    config = ScenarioConfig(n_target_items=20, cold_max_interactions=10, pretend_pool_size=30)
    scenario = build_scenario(*tiny_pair, config)
    assert len(np.intersect1d(scenario.pretend_pool, scenario.eval_users)) == 0
    assert len(scenario.pretend_pool) + len(scenario.eval_users) == scenario.n_users
    train_counts = np.bincount(scenario.train[:, 0], minlength=scenario.n_users)
    assert (train_counts[scenario.pretend_pool] >= 3).all()
    assert len(scenario.pretend_pool) == 30
    all_rows = np.concatenate([scenario.train, scenario.valid, scenario.test])
    popularity = np.bincount(all_rows[:, 1], minlength=scenario.n_items)
    in_source = set(scenario.source_items.tolist())
    assert len(scenario.cold_targets) == 20
    for item in scenario.cold_targets:
        assert popularity[item] < 10 and item in in_source
    decile_items = [i for items in scenario.decile_targets.values() for i in items]
    assert set(decile_items) <= in_source
    train_pop = np.bincount(scenario.train[:, 1], minlength=scenario.n_items)
    lowest, highest = scenario.decile_targets[0], scenario.decile_targets[9]
    assert max(train_pop[lowest]) <= min(train_pop[highest])


def test_source_profiles_hold_overlapping_items_in_time_order(
    tiny_pair: tuple[Dataset, Dataset],
) -> None:
    target, source = tiny_pair
    scenario = build_scenario(target, source, ScenarioConfig())
    target_imdb = {m.imdb_id for m in scenario.catalogue}
    assert all(scenario.catalogue[i].imdb_id in target_imdb for i in scenario.source_items)
    for index in range(len(scenario.source_indptr) - 1):
        start, end = scenario.source_indptr[index], scenario.source_indptr[index + 1]
        assert end > start
        assert (np.diff(scenario.source_times[start:end]) >= 0).all()
    # each mapped item is the same movie on both sides
    source_by_imdb = {m.imdb_id for m in source.movies.values()}
    assert all(scenario.catalogue[i].imdb_id in source_by_imdb for i in scenario.source_items)


def test_round_trip_and_tamper_detection(
    tiny_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    scenario = build_scenario(*tiny_pair, ScenarioConfig(seed=7))
    save_scenario(scenario, tmp_path / "s")
    loaded = load_scenario(tmp_path / "s")
    assert loaded.fingerprint == scenario.fingerprint
    assert loaded.catalogue == scenario.catalogue and loaded.config == scenario.config
    for name in ("train", "valid", "test", "pretend_pool", "source_indptr", "source_items"):
        assert np.array_equal(getattr(loaded, name), getattr(scenario, name))
    assert loaded.table1() == scenario.table1()
    catalogue = tmp_path / "s" / "public" / "catalogue.csv"
    catalogue.write_text(catalogue.read_text().replace("Synthetic", "Edited", 1))
    with pytest.raises(ScenarioError, match="does not match the manifest"):
        load_scenario(tmp_path / "s")


def test_existing_scenario_needs_force_and_is_kept_on_failure(
    tiny_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    scenario = build_scenario(*tiny_pair, ScenarioConfig())
    save_scenario(scenario, tmp_path / "s")
    with pytest.raises(CopyAttackError, match="--force"):
        save_scenario(scenario, tmp_path / "s")
    save_scenario(scenario, tmp_path / "s", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_not_a_scenario(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"manifest\.json is missing"):
        load_scenario(tmp_path)


def test_no_overlap_is_an_empty_result(tiny_pair: tuple[Dataset, Dataset]) -> None:
    target, source = tiny_pair
    renamed = {
        k: type(m)(k, m.title + " x", m.year, imdb_id=None) for k, m in source.movies.items()
    }
    unrelated = Dataset("unrelated", source.ratings, renamed, 5.0, 4.0)
    with pytest.raises(EmptyResultError, match="no unrelated profile holds"):
        build_scenario(target, unrelated, ScenarioConfig())


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        ScenarioConfig(split=(0.8, 0.1, 0.2))


def test_min_source_holders_draws_targets_with_that_many_holders(
    tiny_pair: tuple[Dataset, Dataset],
) -> None:
    default = build_scenario(*tiny_pair, ScenarioConfig())
    explicit = build_scenario(*tiny_pair, ScenarioConfig(min_source_holders=1))
    assert default.cold_targets == explicit.cold_targets  # 1 is the default draw
    rich = build_scenario(*tiny_pair, ScenarioConfig(min_source_holders=5))
    holders = np.zeros(rich.n_items, dtype=int)
    for user in range(len(rich.source_indptr) - 1):
        holders[np.unique(rich.source_profile(user))] += 1
    assert rich.cold_targets and all(holders[i] >= 5 for i in rich.cold_targets)
    assert any(holders[i] < 5 for i in default.cold_targets)  # the option changed the draw
    # the pool is every cold held item, whatever the threshold, and holds the targets
    assert rich.cold_pool == default.cold_pool
    assert set(rich.cold_targets) <= set(rich.cold_pool)
    counts = rich.table1()["cold_items_by_min_source_holders"]
    assert counts["1"] == len(rich.cold_pool) and counts["5"] == int(
        (holders[rich.cold_pool] >= 5).sum()
    )


def test_min_source_holders_beyond_every_item_is_a_clear_error(
    tiny_pair: tuple[Dataset, Dataset],
) -> None:
    with pytest.raises(EmptyResultError, match="at least 100000 source profile"):
        build_scenario(*tiny_pair, ScenarioConfig(min_source_holders=100_000))
    with pytest.raises(ValueError, match="min_source_holders"):
        ScenarioConfig(min_source_holders=0)


def test_attacker_view_reads_the_cold_pool(
    tiny_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    from shared.scenario import load_attacker_view

    scenario = build_scenario(*tiny_pair, ScenarioConfig())
    save_scenario(scenario, tmp_path / "s")
    view = load_attacker_view(tmp_path / "s")
    assert view.cold_pool == scenario.cold_pool and view.cold_targets == scenario.cold_targets


def test_a_subset_of_targets_is_a_seeded_draw_not_the_first_ones() -> None:
    from shared.scenario import draw_targets

    pool = list(range(100, 150))
    drawn = draw_targets(pool, 10, seed=0)
    assert drawn == draw_targets(pool, 10, seed=0) and len(set(drawn)) == 10
    assert set(drawn) <= set(pool) and drawn != pool[:10]
    assert draw_targets(pool, 10, seed=1) != drawn
    assert sorted(draw_targets(pool, 80, seed=0)) == pool  # more than the pool: all of it


def _listed_twice(source: Dataset, original: int) -> Dataset:
    """The source with one movie listed a second time (a new id, the same title, year and
    IMDb id, as ml-100k does), every rating of it given again to the copy a second later."""
    ratings = source.ratings
    copy = int(ratings.item.max()) + 1
    again = ratings.item == original
    doubled = Ratings(
        np.concatenate([ratings.user, ratings.user[again]]),
        np.concatenate([ratings.item, np.full(int(again.sum()), copy)]),
        np.concatenate([ratings.rating, ratings.rating[again]]),
        np.concatenate([ratings.timestamp, ratings.timestamp[again] + 1]),
    )
    movies = {**source.movies, copy: replace(source.movies[original], raw_id=copy)}
    return replace(source, ratings=doubled, movies=movies)


def test_a_source_movie_listed_twice_is_merged_and_held_once(
    tiny_pair: tuple[Dataset, Dataset],
) -> None:
    target, source = tiny_pair
    before = build_scenario(target, source, ScenarioConfig())
    # the source movie behind the most held target item
    held = before.catalogue[int(np.bincount(before.source_items).argmax())]
    (original,) = [k for k, m in source.movies.items() if m.imdb_id == held.imdb_id]
    doubled = _listed_twice(source, original)
    scenario = build_scenario(target, doubled, ScenarioConfig())
    assert scenario.alignment["duplicates_merged"] == 1
    assert scenario.alignment["matched"] == before.alignment["matched"] + 1  # both entries
    # the same profiles as without the copy: the movie once, at its first rating
    for name in ("source_indptr", "source_items", "source_times"):
        assert np.array_equal(getattr(scenario, name), getattr(before, name)), name


def test_year_tolerance_is_recorded_only_when_set(
    tiny_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    default = build_scenario(*tiny_pair, ScenarioConfig())
    near = build_scenario(*tiny_pair, ScenarioConfig(year_tolerance=1))
    save_scenario(default, tmp_path / "a")
    save_scenario(near, tmp_path / "b")
    # a scenario built before the option existed keeps its fingerprint (and its models)
    assert "year_tolerance" not in read_manifest(tmp_path / "a")["config"]
    assert read_manifest(tmp_path / "b")["config"]["year_tolerance"] == 1
    assert near.alignment["by_title_near_year"] == 0  # tiny pair: IMDb ids match everything
    assert default.fingerprint != near.fingerprint
    assert load_scenario(tmp_path / "b").config.year_tolerance == 1
    with pytest.raises(ValueError, match="year_tolerance"):
        ScenarioConfig(year_tolerance=-1)


def test_a_popularity_decile_without_overlapping_items_is_warned_about() -> None:
    popularity = np.arange(40)
    in_source = popularity >= 8  # the two least popular deciles: no source holds them
    rng = np.random.default_rng(0)
    with pytest.warns(EmptyDecileWarning) as warned:
        deciles = _decile_targets(popularity, in_source, ScenarioConfig(), rng)
    assert deciles[0] == deciles[1] == [] and all(deciles[d] for d in range(2, 10))
    assert [str(w.message).split(" (")[0] for w in warned] == [
        "popularity decile 0",
        "popularity decile 1",
    ]
