"""The detectors as the service runs them: fitted once on the clean training graph (on
first use, then kept), and judging a world's users, real and injected, against the
ledger's record of which users were injected."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from recsys_server.detection.detectors import DETECTORS, Detector, fitted
from recsys_server.detection.features import Profiles, distribution_distances
from recsys_server.graph import InteractionGraph
from shared.fake_profiles import PlatformStats
from shared.schemas import DetectionReport, DetectorName, UserScore


class Detection:
    def __init__(self, graph: InteractionGraph, seed: int = 0) -> None:
        """``graph``: the clean training graph; its users with a profile are the real users."""
        users = np.arange(graph.n_base_users)
        self.real_users = users[graph.profile_length(users) > 0]
        self.real = Profiles(*graph.profiles_of(self.real_users))
        self.stats = PlatformStats(self.real.lengths, graph.train_degree.copy())
        self.seed = seed
        self._detectors: dict[str, tuple[Detector, np.ndarray]] = {}
        # one fit per detector, whichever thread asks first; a lock per detector, so a fit
        # (seconds on the real pairs) holds up only those waiting for that same detector
        self._fitting = {name: threading.Lock() for name in DETECTORS}

    def detector(self, name: DetectorName) -> tuple[Detector, np.ndarray]:
        """The fitted detector and its scores of the real users (out of bag for the
        supervised one: see :meth:`Detector.real_scores`)."""
        with self._fitting[name]:
            if name not in self._detectors:
                detector = fitted(name, self.real, self.stats, self.seed)
                self._detectors[name] = detector, detector.real_scores(self.real)
            return self._detectors[name]

    def judge(
        self,
        world_id: str,
        name: DetectorName,
        injected: Sequence[tuple[int, Sequence[int]]],
        threshold: float | None = None,
        include_users: bool = True,
    ) -> DetectionReport:
        """Score the real users and the ``injected`` (user id, profile) pairs; flag those
        above ``threshold`` (default: the detector's) and measure against the truth."""
        detector, real_scores = self.detector(name)
        threshold = detector.threshold if threshold is None else threshold
        fakes = Profiles.of([items for _, items in injected])
        # one profile at a time, as the defence scores an injection: ECOD's statistics
        # take in the batch it scores, so copies scored together would hide each other
        fake_scores = np.array(
            [float(detector.score(Profiles.of([items]))[0]) for _, items in injected]
        )
        scores = np.concatenate([real_scores, fake_scores])
        truth = np.concatenate([np.zeros(len(real_scores), bool), np.ones(len(fakes), bool)])
        flags = scores > threshold
        hits = int((flags & truth).sum())
        precision = hits / flags.sum() if flags.any() else 0.0
        recall = hits / truth.sum() if truth.any() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        js = tv = best_f1 = best_threshold = None
        if injected:
            js, tv = distribution_distances(fakes, self.real, self.stats.popularity)
            best_f1, best_threshold = _best_f1(truth, scores)
        users = None
        if include_users:
            ids = np.concatenate([self.real_users, [u for u, _ in injected]]).astype(int)
            users = [
                UserScore(user_id=u, score=s, flagged=f, injected=t)
                for u, s, f, t in zip(
                    ids.tolist(), scores.tolist(), flags.tolist(), truth.tolist(), strict=True
                )
            ]
        return DetectionReport(
            world_id=world_id,
            detector=name,
            threshold=threshold,
            n_users=len(scores),
            n_injected=len(fakes),
            n_flagged=int(flags.sum()),
            precision=float(precision),
            recall=float(recall),
            f1=float(f1),
            roc_auc=float(roc_auc_score(truth, scores)) if injected else None,
            false_positive_rate=float(flags[~truth].mean()),
            js_distance=js,
            tv_distance=tv,
            best_f1=best_f1,
            best_threshold=best_threshold,
            users=users,
        )


def _best_f1(truth: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The highest F1 any threshold reaches, and the threshold (flag above it): what the
    detector could do had its operator known the attack's size."""
    precision, recall, cuts = precision_recall_curve(truth, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    # flagged are scores >= cuts[best]: the next lower score is the threshold to exceed
    below = scores[scores < cuts[best]]
    return float(f1[best]), float(below.max()) if len(below) else float(cuts[best]) - 1.0
