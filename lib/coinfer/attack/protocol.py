"""The experiment of Sects. 2.3 and 2.7: query sets, the chapter's protocol and its attacker.

* :func:`query_subset` — seeded subsets of a data set (the attacker's :math:`X`, the victims'
  :math:`x_0`, or only some classes); :func:`noise_queries` — the least informed query set;
* :class:`AttackProtocol` and :data:`PROTOCOL` — Chapter 2's protocol (Table 1, Fig. 3);
* :func:`chapter_attacker` — the cached black-box attacker of that protocol, reused by Chapter 3;
* :func:`replicate_attackers` — the same attacker retrained with other seeds and query sets
  (the spread of Table 1 over attackers, not only over test images);
* :data:`SIGN_FAMILIES` and :func:`family_classes` — GTSRB's classes grouped by shape and colour,
  for a real data mismatch between the attacker's queries and the victims' images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..config import check_positive_int
from ..data import ImageSet
from ..models import IMAGE_SHAPE
from ._checks import _check_at
from .black_box import load_or_train_attacker
from .inverse import InverseConfig, InverseResult
from .threat import split_oracle

def noise_queries(n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` images of uniform noise (``uint8``): the least informed query set an attacker can use."""
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *IMAGE_SHAPE), generator=g, dtype=torch.uint8)


@dataclass(frozen=True)
class AttackProtocol:
    """The experimental protocol of Chapter 2 (Table 1, Fig. 3), in one place.

    The attacker's query images :math:`X` are ``n_queries`` images of the GTSRB *training* split;
    the victims' images :math:`x_0` are ``n_victims`` images of the *test* split, so the two sets
    are disjoint but, as the paper assumes, "follow the same distribution".  Every split point
    gets its own attacker, trained with ``config`` and cached under ``cache_key`` by
    :func:`load_or_train_attacker`; Chapter 3 reuses the split-4 attacker through
    :func:`chapter_attacker`.
    """

    splits: tuple[int, ...] = (2, 4, 6)
    n_queries: int = 1000
    n_victims: int = 1000
    query_seed: int = 0
    victim_seed: int = 1
    cache_key: str = "victim"
    config: InverseConfig = InverseConfig()

    def __post_init__(self):
        for at in self.splits:
            _check_at(at)
        check_positive_int("n_queries", self.n_queries)
        check_positive_int("n_victims", self.n_victims)
        check_positive_int("query_seed", self.query_seed, allow_zero=True)
        check_positive_int("victim_seed", self.victim_seed, allow_zero=True)
        if not isinstance(self.config, InverseConfig):
            raise TypeError(f"config must be an InverseConfig, got {type(self.config).__name__}")

    def attacker_images(self, train_set: ImageSet) -> ImageSet:
        """The attacker's query set :math:`X`: ``query_subset(train_set, n_queries, seed=query_seed)``."""
        return query_subset(train_set, self.n_queries, seed=self.query_seed)

    def victim_images(self, test_set: ImageSet) -> ImageSet:
        """The vehicles' images :math:`x_0`: ``query_subset(test_set, n_victims, seed=victim_seed)``."""
        return query_subset(test_set, self.n_victims, seed=self.victim_seed)


#: Chapter 2's protocol (Table 1 and everything built on it).
PROTOCOL = AttackProtocol()


def chapter_attacker(
    victim: nn.Sequential,
    train_set: ImageSet,
    *,
    at: int,
    protocol: AttackProtocol = PROTOCOL,
    progress: bool = True,
) -> InverseResult:
    """Chapter 2's black-box attacker against ``victim`` split at ``at`` (trained once, then cached).

    ``load_or_train_attacker(split_oracle(victim, at=at), protocol.attacker_images(train_set),
    at=at, config=protocol.config, cache_key=protocol.cache_key)`` — Algorithm 1's phases 1–2
    with query access only.  Chapter 3 calls it to get the same (clean) split-4 attacker.
    """
    if not isinstance(protocol, AttackProtocol):
        raise TypeError(f"protocol must be an AttackProtocol, got {type(protocol).__name__}")
    return load_or_train_attacker(split_oracle(victim, at=at), protocol.attacker_images(train_set),
                                  at=at, config=protocol.config, cache_key=protocol.cache_key,
                                  progress=progress)


def query_subset(data: ImageSet, n: int, *, seed: int = 0,
                 classes: tuple[int, ...] | None = None) -> ImageSet:
    """A seeded random subset of ``n`` images of ``data`` (optionally only from ``classes``).

    The attacker's query set :math:`X` (from the GTSRB *training* split in the chapter) and the
    victims' evaluation images (from the *test* split) are drawn with this.
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    pool = torch.arange(len(data))
    if classes is not None:
        classes = tuple(int(c) for c in classes)
        if not classes:
            raise ValueError("classes must name at least one class")
        pool = pool[torch.isin(data.labels, torch.tensor(classes))]
    if n > pool.numel():
        raise ValueError(f"n={n} exceeds the {pool.numel()} available images")
    pick = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(pool[pick].sort().values)


def replicate_attackers(
    victim: nn.Sequential,
    train_set: ImageSet,
    *,
    at: int,
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    protocol: AttackProtocol = PROTOCOL,
    progress: bool = False,
) -> list[InverseResult]:
    """The black-box attacker of ``protocol`` replicated over seeds and query sets (cached).

    Replicate ``s`` draws its own query set ``query_subset(train_set, protocol.n_queries,
    seed=s)`` and trains :math:`g_\\omega` with ``replace(protocol.config, seed=s)`` (its own
    initial weights, held-out split and mini-batch order).  With the default protocol, seed 0
    is exactly :func:`chapter_attacker` (query seed 0, config seed 0).  The spread of a metric
    over the replicates is the attack's run-to-run variability, which the confidence interval
    over test images of one attacker does not include.
    """
    if not isinstance(protocol, AttackProtocol):
        raise TypeError(f"protocol must be an AttackProtocol, got {type(protocol).__name__}")
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    for s in seeds:
        check_positive_int("seeds entries", s, allow_zero=True)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    oracle = split_oracle(victim, at=at)
    return [load_or_train_attacker(oracle, query_subset(train_set, protocol.n_queries, seed=s),
                                   at=at, config=replace(protocol.config, seed=s),
                                   cache_key=protocol.cache_key, progress=progress)
            for s in seeds]


#: GTSRB's 43 classes grouped by the shape and colour of the sign (class ids of
#: :data:`coinfer.data.GTSRB_CLASSES`): red-rimmed circles (speed limits, no passing, no
#: vehicles), red-rimmed triangles (the warnings, with "right-of-way at the next intersection"),
#: blue discs (the mandatory signs), and the rest (end-of-restriction signs with grey stripes,
#: priority road, yield, stop, no entry).
SIGN_FAMILIES: dict[str, tuple[int, ...]] = {
    "red circle": (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16),
    "red triangle": (11, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31),
    "blue disc": (33, 34, 35, 36, 37, 38, 39, 40),
    "other": (6, 12, 13, 14, 17, 32, 41, 42),
}


def family_classes(*families: str) -> tuple[int, ...]:
    """The class ids of one or more :data:`SIGN_FAMILIES`, sorted."""
    if not families:
        raise ValueError("name at least one family")
    out: set[int] = set()
    for f in families:
        if f not in SIGN_FAMILIES:
            raise ValueError(f"family must be one of {tuple(SIGN_FAMILIES)}, got {f!r}")
        out.update(SIGN_FAMILIES[f])
    return tuple(sorted(out))
