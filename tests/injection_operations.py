"""Random sequences of injections and removals for the property tests of every victim's
incremental refresh: adds of random profiles, repeats of an earlier profile, removals
of a live injected user."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from recsys_server.victims.base import ServingState


def operation_lists(profiles: st.SearchStrategy[list[int]], max_size: int) -> st.SearchStrategy:
    return st.lists(
        st.one_of(
            st.tuples(st.just("add"), profiles),
            st.tuples(st.just("repeat"), st.integers(0, 100)),
            st.tuples(st.just("remove"), st.integers(0, 100)),
        ),
        min_size=1,
        max_size=max_size,
    )


def replay(state: ServingState, operations: list[tuple[str, Any]]) -> None:
    """Apply the operations to ``state`` (a repeat or removal with nothing to act on is
    skipped)."""
    added: list[list[int]] = []
    for op, value in operations:
        live = state.graph.injected_users
        if op == "add":
            state.add_user(np.array(value))
            added.append(value)
        elif op == "repeat" and added:
            state.add_user(np.array(added[value % len(added)]))
        elif op == "remove" and live:
            state.remove_user(live[value % len(live)])
