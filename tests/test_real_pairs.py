"""The two real pairs from ../shared/data (COPYATTACK_DATA_DIR); these run in CI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_server.data import TargetData
from recsys_server.graph import InteractionGraph
from recsys_server.pinsage.model import PinSage, PinSageConfig
from recsys_server.pinsage.refresh import EmbeddingState
from recsys_server.pinsage.train import train_pinsage
from recsys_server.training import TrainConfig
from shared.alignment import align_catalogues, duplicate_groups
from shared.cli import main
from shared.datasets.types import Dataset
from shared.preprocess import liked_interactions
from shared.scenario import ScenarioConfig, build_scenario, load_scenario, save_scenario

pytestmark = pytest.mark.realdata


def _rated(dataset):
    rated = set(np.unique(dataset.ratings.item).tolist())
    return {k: m for k, m in dataset.movies.items() if k in rated}


def test_imdb_alignment_of_the_unfiltered_catalogues_is_5191(
    primary_pair: tuple[Dataset, Dataset],
) -> None:
    target, source = primary_pair
    alignment = align_catalogues(_rated(target), _rated(source), use_titles=False)
    assert alignment.by_imdb == 5191


def test_title_year_matching_agrees_with_imdb(primary_pair: tuple[Dataset, Dataset]) -> None:
    target, source = primary_pair
    by_imdb = align_catalogues(_rated(target), _rated(source), use_titles=False).source_to_target
    by_title = align_catalogues(_rated(target), _rated(source), use_imdb=False).source_to_target
    agree = sum(by_imdb.get(s) == t for s, t in by_title.items())
    assert agree / len(by_imdb) > 0.93  # recall: docs/data.md ("Alignment") finds about 95%
    assert agree / len(by_title) > 0.998  # precision: a handful of IMDb disagreements


def test_year_tolerance_errors_against_imdb_on_the_pair_that_has_both(
    primary_pair: tuple[Dataset, Dataset],
) -> None:
    """Title + year (±1) without IMDb ids, checked against the IMDb match (issue 18,
    newcomer item 7): the numbers of docs/data.md, "Alignment"."""
    target, source = primary_pair
    movies_t, movies_s = _rated(target), _rated(source)
    exact = align_catalogues(movies_t, movies_s, use_imdb=False)
    near = align_catalogues(movies_t, movies_s, use_imdb=False, year_tolerance=1)
    added = {s: t for s, t in near.source_to_target.items() if s not in exact.source_to_target}

    def disagreeing(pairs: dict[int, int]) -> int:
        return sum(movies_s[s].imdb_id != movies_t[t].imdb_id for s, t in pairs.items())

    # the tolerance only adds: no exact-year match is changed or lost
    assert {s: near.source_to_target[s] for s in exact.source_to_target} == exact.source_to_target
    assert near.by_title_near_year == len(added) == 81
    assert (len(exact.source_to_target), disagreeing(exact.source_to_target)) == (4946, 6)
    assert disagreeing(added) == 2  # 2.5% of the matches it adds, against 0.12% at the year
    # the pair's same title + year entries are different films (their IMDb ids differ):
    # none is merged, and the default alignment is what it was (5,197 matches)
    assert duplicate_groups(movies_s) == duplicate_groups(movies_t) == {}
    assert align_catalogues(movies_t, movies_s).report() == {
        "matched": 5197, "by_imdb": 5191, "by_title_year": 6, "ambiguous_left_out": 0,
    }  # fmt: skip


def test_top_rating_counts_match_the_data_readme(primary_pair: tuple[Dataset, Dataset]) -> None:
    target, source = primary_pair
    for dataset, expected in ((source, (13211, 573, 2954)), (target, (12392, 5799, 3327))):
        rows = liked_interactions(dataset, top_rating_only=True)
        assert (len(rows), np.unique(rows.user).size, np.unique(rows.item).size) == expected


def test_table1_of_both_pairs(real_data_dir: Path, capsys) -> None:
    tables = []
    for target, source in (
        ("movietweetings-100k", "ml-latest-small"),
        ("ml-latest-small", "movietweetings-100k"),
    ):
        args = ["data", "table1", "--target", target, "--source", source, "--json"]
        assert main([*args, "--data-dir", str(real_data_dir)]) == 0
        tables.append(json.loads(capsys.readouterr().out))
    primary, reverse = tables
    assert primary["target_users"] == 13764 and primary["target_items"] == 6718
    assert primary["target_interactions"] == 50542
    assert primary["source_users"] == 609 and primary["overlapping_items"] == 3261
    assert primary["source_profile_length_median"] == 34  # long copied profiles
    assert reverse["target_users"] == 609 and reverse["source_users"] == 12221
    assert reverse["source_profile_length_median"] == 1  # one to three movies
    assert primary["alignment"]["by_imdb"] == reverse["alignment"]["by_imdb"] == 5191


def test_primary_scenario_is_reproducible(
    primary_pair: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    config = ScenarioConfig(seed=11)
    first = build_scenario(*primary_pair, config)
    second = build_scenario(*primary_pair, config)
    save_scenario(first, tmp_path / "a")
    save_scenario(second, tmp_path / "b")
    assert first.fingerprint == second.fingerprint
    loaded = load_scenario(tmp_path / "a")
    assert len(loaded.cold_targets) == 50
    all_rows = np.concatenate([loaded.train, loaded.valid, loaded.test])
    popularity = np.bincount(all_rows[:, 1], minlength=loaded.n_items)
    assert (popularity[loaded.cold_targets] < 10).all()
    assert set(loaded.datasets) == {
        "movietweetings-100k/movies.dat",
        "movietweetings-100k/ratings.dat",
        "ml-latest-small/links.csv",
        "ml-latest-small/movies.csv",
        "ml-latest-small/ratings.csv",
    }


def test_refresh_is_exact_on_the_real_target_with_a_copied_profile(
    primary_pair: tuple[Dataset, Dataset],
) -> None:
    scenario = build_scenario(*primary_pair, ScenarioConfig())
    data = TargetData.from_scenario(scenario)
    torch.manual_seed(0)
    model = PinSage(PinSageConfig(dim=8), data.content.shape[1], data.n_items)
    state = EmbeddingState(model, InteractionGraph(data.train, data.n_users, data.n_items),
                           data.content)  # fmt: skip
    lengths = np.diff(scenario.source_indptr)
    longest = int(np.argmax(lengths))
    profile = scenario.source_profile(longest)[:50]
    target = scenario.cold_targets[0]
    before = state.scores(scenario.pretend_pool[:5])[:, target]
    for _ in range(3):
        state.add_user(np.unique(np.append(profile, target)))
    full = EmbeddingState(model, state.graph, data.content)
    assert np.abs(state.item_vectors.dense() - full.item_vectors.dense()).max() <= 1e-5
    after = state.scores(scenario.pretend_pool[:5])[:, target]
    assert not np.allclose(before, after)


def test_same_seed_same_weights_with_two_threads(primary_pair: tuple[Dataset, Dataset]) -> None:
    """Two CPU threads made the backward sums scheduling-dependent (max |dw| 0.03 after one
    epoch) until training asked for torch's deterministic kernels."""
    data = TargetData.from_scenario(build_scenario(*primary_pair, ScenarioConfig(seed=0)))
    torch.use_deterministic_algorithms(False)  # what a fresh process starts with
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = []
        for _ in range(2):
            model, _ = train_pinsage(
                data, PinSageConfig(), TrainConfig(max_epochs=1, progress=False)
            )
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(weights[0], weights[1])
