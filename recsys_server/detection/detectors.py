"""Shilling detectors: each is fitted on the platform's real users (the training graph,
before any attack) and then scores any profile, real or injected; a higher score is more
suspicious, and a score above the detector's threshold is flagged.

- ``pca``: PCA-VarSelect (Mehta and Nejdl 2009). Users are the variables: each user's
  row of the binary user-item matrix is z-scored, and the users whose loadings on the
  top principal components are smallest are the suspects (fake profiles resemble each
  other and no real taste). A profile outside the fit is folded in (u = z V / S).
- ``degree``: DegreeSAD-style, supervised: a random forest on the profile features,
  trained on the real users and on generated attacks (every kind of
  :mod:`shared.fake_profiles`) injected into the training graph; never on a world it
  judges.
- ``ecod``, ``iforest``: pyod's ECOD and IsolationForest on the same features.

Default thresholds are the ``1 - FALSE_ALARM`` quantile of the real users' scores (for
the supervised detector their out-of-bag scores): a stated false-alarm rate on the users
it was fitted on.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy.sparse.linalg import LinearOperator, svds

from recsys_server.detection.features import Profiles, profile_features
from shared.fake_profiles import FAKE_KINDS, PlatformStats, fake_profile, segment_of

FALSE_ALARM = 0.01  # the share of real users an unsupervised default threshold flags
# DegreeSAD's training attacks: this share of the real users' count, over all kinds
FAKE_SHARE = 0.1
MIN_FAKES = 200


class Detector(ABC):
    name: ClassVar[str]
    threshold: float

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @abstractmethod
    def fit(self, real: Profiles, stats: PlatformStats) -> Detector:
        """Fit on the real users' profiles (none empty) and the platform's statistics."""

    @abstractmethod
    def score(self, profiles: Profiles) -> np.ndarray:
        """One score per profile (none empty); higher is more suspicious."""

    def real_scores(self, real: Profiles) -> np.ndarray:
        """The scores of the real users it was fitted on, as a judge of them should read
        them: their own scores (an unsupervised detector learnt no label to give back)."""
        return self.score(real)

    def _calibrate(self, real_scores: np.ndarray) -> None:
        # nan: a user no out-of-bag tree scored (rare), left out
        self.threshold = float(np.nanquantile(real_scores, 1.0 - FALSE_ALARM))


class PCAVarSelect(Detector):
    name = "pca"

    def __init__(self, seed: int = 0, n_components: int = 3) -> None:
        super().__init__(seed)
        self.n_components = n_components

    def fit(self, real: Profiles, stats: PlatformStats) -> PCAVarSelect:
        n_users, n_items = len(real), stats.n_items
        self.n_items = n_items
        mean, scale = self._moments(real)
        rows, items = real.rows, real.items

        # Z = diag(1/scale) (X - mean 1^T), never materialised: X is sparse, Z is dense
        def matvec(v: np.ndarray) -> np.ndarray:
            v = np.ravel(v)
            xv = np.bincount(rows, weights=v[items], minlength=n_users)
            return (xv - mean * v.sum()) / scale

        def rmatvec(w: np.ndarray) -> np.ndarray:
            w = np.ravel(w) / scale
            return np.bincount(items, weights=w[rows], minlength=n_items) - (w * mean).sum()

        operator = LinearOperator(
            (n_users, n_items), matvec=matvec, rmatvec=rmatvec, dtype=np.float64
        )
        k = min(self.n_components, min(n_users, n_items) - 1)
        u, s, vt = svds(operator, k=k, random_state=self.seed)
        self.components = vt.T / s  # folds a z-scored profile into user loadings
        self.n_fit = n_users
        self._calibrate(self._score(u))
        return self

    def score(self, profiles: Profiles) -> np.ndarray:
        mean, scale = self._moments(profiles)
        # z V / S: the held items' rows of V summed, less the mean times V's column sums
        held = np.add.reduceat(self.components[profiles.items], profiles.indptr[:-1], axis=0)
        loadings = (held - np.outer(mean, self.components.sum(axis=0))) / scale[:, None]
        return self._score(loadings)

    def _moments(self, profiles: Profiles) -> tuple[np.ndarray, np.ndarray]:
        mean = profiles.lengths / self.n_items
        # a profile of the whole catalogue has no spread: left unscaled
        scale = np.sqrt(mean * (1 - mean))
        return mean, np.where(scale > 0, scale, 1.0)

    def _score(self, loadings: np.ndarray) -> np.ndarray:
        # the smallest contribution to the top components is the most suspicious
        return -self.n_fit * (loadings**2).sum(axis=1)


class _FeatureDetector(Detector):
    """A detector of the profile features (log-scaled: popularity is heavy-tailed)."""

    def fit(self, real: Profiles, stats: PlatformStats) -> Detector:
        self.popularity = stats.popularity
        self._fit(self.features(real), real, stats)
        return self

    def features(self, profiles: Profiles) -> np.ndarray:
        return np.log1p(profile_features(profiles, self.popularity))

    @abstractmethod
    def _fit(self, features: np.ndarray, real: Profiles, stats: PlatformStats) -> None: ...


class _PyODDetector(_FeatureDetector):
    def _fit(self, features: np.ndarray, real: Profiles, stats: PlatformStats) -> None:
        self.model = self._model()
        self.model.fit(features)
        # not ``decision_scores_``: ECOD scores new data against the fit and the new data
        # together, so the threshold is taken on the scores ``score`` gives
        self._calibrate(self.score(real))

    def score(self, profiles: Profiles) -> np.ndarray:
        return np.asarray(self.model.decision_function(self.features(profiles)))

    @abstractmethod
    def _model(self) -> Any: ...


class ECODDetector(_PyODDetector):
    name = "ecod"

    def _model(self) -> Any:
        from pyod.models.ecod import ECOD  # pyod imports numba: ~2 s, paid on first use

        return ECOD(contamination=FALSE_ALARM)


class IForestDetector(_PyODDetector):
    name = "iforest"

    def _model(self) -> Any:
        from pyod.models.iforest import IForest

        return IForest(contamination=FALSE_ALARM, random_state=self.seed, n_jobs=1)


class DegreeSAD(_FeatureDetector):
    name = "degree"

    def _fit(self, features: np.ndarray, real: Profiles, stats: PlatformStats) -> None:
        from sklearn.ensemble import RandomForestClassifier

        fakes = training_attacks(real, stats, self.seed)
        x = np.vstack([features, self.features(fakes)])
        y = np.concatenate([np.zeros(len(real)), np.ones(len(fakes))])
        forest = RandomForestClassifier(
            n_estimators=100,
            min_samples_leaf=2,
            class_weight="balanced",
            random_state=self.seed,
            n_jobs=1,
            oob_score=True,
        )
        with warnings.catch_warnings():  # "some inputs do not have OOB scores": nan, see below
            warnings.simplefilter("ignore", UserWarning)
            self.model = forest.fit(x, y)
        # in-sample probabilities of the real users are optimistic: calibrate on each
        # user's out-of-bag probability, from the trees that never saw it
        self.out_of_bag = self.model.oob_decision_function_[: len(real), 1]
        self._calibrate(self.out_of_bag)

    def score(self, profiles: Profiles) -> np.ndarray:
        return self.model.predict_proba(self.features(profiles))[:, 1]

    def real_scores(self, real: Profiles) -> np.ndarray:
        """Out of bag: in sample, the forest gives each real user back the label it learnt
        (it flagged none of them on the real pairs, a false-positive rate no unseen user
        would get). A user no out-of-bag tree scored (rare) keeps its in-sample score."""
        scores = self.out_of_bag.copy()
        unseen = np.flatnonzero(np.isnan(scores))
        if len(unseen):
            scores[unseen] = self.score(real.subset(unseen))
        return scores


def training_attacks(real: Profiles, stats: PlatformStats, seed: int) -> Profiles:
    """Generated profiles of every kind, as attacks on the training graph would inject:
    each on a target drawn from the less popular half of the held items (attacks push
    cold items), lengths drawn from the real users' lengths."""
    rng = np.random.default_rng(seed)
    n = max(MIN_FAKES, int(FAKE_SHARE * len(real)))
    held = np.flatnonzero(stats.popularity > 0)
    cold = held[stats.popularity[held] <= np.median(stats.popularity[held])]
    profiles = []
    for index in range(n):
        kind = FAKE_KINDS[index % len(FAKE_KINDS)]
        target = int(rng.choice(cold))
        segment = None
        if kind == "segment":
            segment = segment_of(target, real.indptr, real.items, stats.n_items)
        profiles.append(fake_profile(kind, target, stats, rng, segment))
    return Profiles.of(profiles)


DETECTORS: dict[str, type[Detector]] = {
    d.name: d for d in (PCAVarSelect, DegreeSAD, ECODDetector, IForestDetector)
}


def fitted(name: str, real: Profiles, stats: PlatformStats, seed: int = 0) -> Detector:
    """The detector ``name`` fitted on the real users."""
    return DETECTORS[name](seed).fit(real, stats)
