"""Worlds: isolated copies of the target platform, one per attacker key, in one process.

A world is a fork of the clean model's live state (the victim's
:class:`~recsys_server.victims.base.ServingState`; copy-on-write: the training graph and
every table are shared, a world holds only the rows its own injections
changed) plus the pretend users handed to its attacker. The :class:`WorldRegistry`
composes one piece per job, each in its own module:

- ``lifecycle``: the worlds (lookup, creation, reset, deletion, usage), in step with the
  ledger, and their replay on restart;
- ``attacks``: the attacker's ``/topk`` and injections (query leases, budgets, the
  incremental refresh on the refresh thread);
- ``evaluation``: HR@K / NDCG@K of targets, with its caches, on its own thread;
- ``retrains``: retrain jobs (see that module), on their own thread;
- ``defence``: the detectors, a defended world's screening and the detect route.

The CPU-heavy work runs on those dedicated threads, so the event loop keeps serving
meanwhile. The pieces raise the errors of :mod:`recsys_server.domain_errors` and know nothing
of HTTP.

A state, once installed in a world, is never changed: an injection refreshes a fork of
it on the refresh thread and installs the fork only after the ledger has committed the
injection. So a ``/topk`` or an evaluation reads one consistent state without waiting,
sees the world before or after an injection and never halfway, and an injection that
fails leaves no trace (not even a used-up user id). Writers of a world (injections,
resets, deletion, a running retrain) are serialised by its lock, and re-check after
waiting for it that the world still exists.
"""

from recsys_server.worlds.registry import WorldRegistry
from recsys_server.worlds.world import Retrain, World

__all__ = ["Retrain", "World", "WorldRegistry"]
