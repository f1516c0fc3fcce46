from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.profiles import WINDOW_SHARES, crop_around_target

PROFILE = np.arange(1, 11)  # v1..v10


def test_paper_example() -> None:
    assert crop_around_target(PROFILE, 5, 0.5).tolist() == [3, 4, 5, 6, 7]


def test_target_first_last_and_single_item() -> None:
    assert crop_around_target(PROFILE, 1, 0.3).tolist() == [1, 2, 3]
    assert crop_around_target(PROFILE, 10, 0.3).tolist() == [8, 9, 10]
    assert crop_around_target(np.array([7]), 7, 0.1).tolist() == [7]
    assert crop_around_target(PROFILE, 4, 1.0).tolist() == PROFILE.tolist()
    assert crop_around_target(PROFILE, 4, 0.1).tolist() == [4]


def test_bad_share_and_missing_target() -> None:
    with pytest.raises(ValueError, match="share"):
        crop_around_target(PROFILE, 5, 0.0)
    with pytest.raises(ValueError, match="not in the profile"):
        crop_around_target(PROFILE, 42, 0.5)


@given(
    length=st.integers(1, 60),
    position=st.data(),
    share=st.sampled_from(WINDOW_SHARES),
)
def test_window_is_contiguous_holds_target_and_has_the_share(length, position, share) -> None:
    profile = np.arange(100, 100 + length)
    target = int(profile[position.draw(st.integers(0, length - 1))])
    window = crop_around_target(profile, target, share)
    assert target in window
    assert len(window) == max(1, int(np.floor(share * length + 0.5)))
    assert (np.diff(window) == 1).all()  # a contiguous, chronological slice
