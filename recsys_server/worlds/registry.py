"""The registry: the one object the routes reach the worlds through. It builds one piece
per job over the same ledger and clean state, replays the ledger's worlds into them, and
stops them at shutdown; the routes call the pieces."""

from __future__ import annotations

import logging
import sqlite3

from recsys_server.artifact import ArtifactError, ModelArtifact
from recsys_server.data import TargetData
from recsys_server.ledger import Ledger
from recsys_server.observability import ServiceMetrics
from recsys_server.worlds.attacks import Attacks
from recsys_server.worlds.defence import Defences
from recsys_server.worlds.evaluation import Evaluation
from recsys_server.worlds.lifecycle import Worlds
from recsys_server.worlds.retrains import RetrainJobs

log = logging.getLogger("recsys_server")


class WorldRegistry:
    def __init__(
        self,
        artifact: ModelArtifact,
        ledger: Ledger,
        *,
        max_profile_length: int,
        max_retrain_jobs: int,
        eval_seed: int = 0,
        metrics: ServiceMetrics | None = None,
        query_lease: int,
    ) -> None:
        """Build the clean state from the artifact and replay every world in the ledger.

        ``query_lease``: how many queries one ledger write counts ahead
        (see :meth:`Attacks.topk`)."""
        if artifact.data is None:
            raise ArtifactError(
                "the model artifact carries no serving data; write it with "
                "`recsys-server train` from this version"
            )
        self.data: TargetData = artifact.data
        self.artifact = artifact
        self.ledger = ledger
        metrics = metrics or ServiceMetrics()
        clean = artifact.victim.serving_state(self.data)
        self.defences = Defences(clean.graph, ledger, eval_seed)
        self.retrains = RetrainJobs(ledger, self.data, max_retrain_jobs)
        self.worlds = Worlds(ledger, clean, self.data, self.defences, self.retrains, metrics)
        self.attacks = Attacks(
            ledger,
            self.data,
            self.defences,
            metrics,
            max_profile_length=max_profile_length,
            query_lease=query_lease,
        )
        self.evaluation = Evaluation(clean, self.data, eval_seed)
        self.worlds.restore()

    @property
    def n_worlds(self) -> int:
        return len(self.worlds)

    async def stop_retrains(self) -> None:
        """Cancel every unfinished retrain job and wait until each has stopped."""
        await self.retrains.stop_all()

    def close(self) -> None:
        """Give back every world's unanswered lease (the counters become exact), then stop
        the compute threads."""
        try:
            self.worlds.return_leases()
        except sqlite3.OperationalError as exc:
            # a ledger held by another process: the rest stays counted as spent, as after
            # a crash, which over-counts but never lets a budget be passed
            log.warning("unanswered query leases not given back: %s", exc)
        for piece in (self.attacks, self.evaluation, self.retrains, self.defences):
            piece.close()
