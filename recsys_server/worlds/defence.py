"""Detection and defence: the shilling detectors a world's defence screens injections
with, and the admin's detector runs over a world's users (the ledger's injections are the
ground truth). A detector is fitted once, on the clean training graph, and then kept."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from recsys_server.detection.features import Profiles
from recsys_server.detection.service import Detection
from recsys_server.graph import InteractionGraph
from recsys_server.ledger import Ledger
from recsys_server.worlds.world import World, run_on
from shared.schemas import DetectionReport, DetectorName, DetectRequest


class Defences:
    def __init__(self, graph: InteractionGraph, ledger: Ledger, seed: int) -> None:
        """``graph``: the clean training graph (its users are the real users)."""
        self.ledger = ledger
        self.detection = Detection(graph, seed=seed)
        # fits and judgments run here: seconds on the real pairs, off the event loop
        self._detector = ThreadPoolExecutor(1, thread_name_prefix="detect")

    def close(self) -> None:
        self._detector.shutdown(wait=True)

    async def prepare(self, name: DetectorName) -> float:
        """Fit the detector if it is not yet, on this piece's thread (a fit holds up no
        other detector's users); its default threshold."""
        return await run_on(self._detector, self.default_threshold, name)

    def default_threshold(self, name: DetectorName) -> float:
        """The detector's own threshold (fitted first if it is not yet: seconds)."""
        return self.detection.detector(name)[0].threshold

    def flags(self, world: World, items: list[int]) -> bool:
        """Whether the world's defence quarantines this profile (its score is above the
        world's threshold). Runs on the refresh thread; the detector was fitted when the
        world was created or restored."""
        if world.defence == "none" or world.defence_threshold is None:
            raise RuntimeError(f"world {world.world_id} has no defence to screen with")
        detector, _ = self.detection.detector(world.defence)
        return float(detector.score(Profiles.of([items]))[0]) > world.defence_threshold

    async def detect(self, world: World, request: DetectRequest) -> DetectionReport:
        """Run a shilling detector over the world's real and injected users (the ledger's
        injections are the ground truth); the first use of a detector fits it."""
        injected = [(r.user_id, r.items) for r in self.ledger.injections(world.world_id)]
        return await run_on(
            self._detector,
            self.detection.judge,
            world.world_id,
            request.detector,
            injected,
            request.threshold,
            request.include_users,
        )
