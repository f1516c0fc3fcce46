from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from shared.synthetic import PRESETS, generate_pair, preset


def _popularity(dataset, n: int) -> np.ndarray:
    liked = dataset.ratings.rating >= dataset.like_threshold
    by_imdb = np.zeros(n)
    for item, count in zip(
        *np.unique(dataset.ratings.item[liked], return_counts=True), strict=True
    ):
        imdb = dataset.movies[int(item)].imdb_id - 1_000_000
        if imdb < n:
            by_imdb[imdb] = count
    return by_imdb


def test_same_config_same_data() -> None:
    a_target, a_source = generate_pair(preset("tiny"))
    b_target, _ = generate_pair(preset("tiny"))
    c_target, _ = generate_pair(replace(preset("tiny"), seed=1))
    assert np.array_equal(a_target.ratings.item, b_target.ratings.item)
    assert np.array_equal(a_target.ratings.timestamp, b_target.ratings.timestamp)
    assert not np.array_equal(a_target.ratings.item[:50], c_target.ratings.item[:50])
    assert a_target.fingerprint == b_target.fingerprint != c_target.fingerprint
    assert len(a_source.ratings) > 0


def test_platforms_share_part_of_the_catalogue() -> None:
    config = preset("tiny")
    target, source = generate_pair(config)
    target_imdb = {m.imdb_id for m in target.movies.values()}
    source_imdb = {m.imdb_id for m in source.movies.values()}
    assert len(target_imdb & source_imdb) == config.n_shared_items
    assert len(target_imdb) == config.n_shared_items + config.n_target_only_items
    assert len(source_imdb) == config.n_shared_items + config.n_source_only_items


def test_domain_shift_moves_source_popularity_away_from_target() -> None:
    n = PRESETS["small"].n_shared_items
    correlations = []
    for shift in (0.0, 1.0):
        target, source = generate_pair(replace(preset("small"), domain_shift=shift))
        a, b = _popularity(target, n), _popularity(source, n)
        correlations.append(np.corrcoef(np.log1p(a), np.log1p(b))[0, 1])
    assert correlations[0] > 0.6
    assert correlations[1] < correlations[0] - 0.3


def test_popularity_is_heavy_tailed_and_profiles_long_tailed() -> None:
    target, _ = generate_pair(preset("small"))
    counts = np.sort(np.unique(target.ratings.item, return_counts=True)[1])[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # top 10% of items
    lengths = np.unique(target.ratings.user, return_counts=True)[1]
    assert lengths.max() > 5 * np.median(lengths)


def test_profiles_keep_topics_together_in_time() -> None:
    target, _ = generate_pair(preset("small"))
    r = target.ratings
    liked = r.rating >= 4
    order = np.lexsort((r.timestamp[liked], r.user[liked]))
    users = r.user[liked][order]
    genres = np.array([target.movies[int(i)].genres[0] for i in r.item[liked][order]])
    same_user = users[1:] == users[:-1]
    neighbour_same = (genres[1:] == genres[:-1])[same_user].mean()
    shuffled = np.random.default_rng(0).permutation(genres)
    assert neighbour_same > 2 * (shuffled[1:] == shuffled[:-1])[same_user].mean()


def test_bad_shift_and_unknown_preset() -> None:
    with pytest.raises(ValueError, match="domain_shift"):
        replace(preset("tiny"), domain_shift=1.5)
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        preset("huge")
