"""What a measurement has gathered so far — per-layer moments, the factor of each pair, optional latents — as one
object that a batch enters whole, that saves to and loads from flat arrays (checkpoints), and that merges with
another one (the processes of a distributed run, in rank order)."""

from __future__ import annotations

import json

import numpy as np

from stlens.errors import StlensError
from stlens.measure.estimate import FACTORS
from stlens.measure.moments import PairedMoments


class Accumulator:
    """Moments per layer (``PairedMoments``), pair factors in pair order, and the pooled latents when kept.

    ``position``: the global index of the next pair (for a resumed or a sharded run, where the pairs seen do not
    start at 0). ``factors``: the factor names, ``dynamic`` and ``static`` first; a pair's factor code is its index
    here. ``factors`` lists the factor of every row that entered the moments (one per pair, or one per instance
    sample with ``units="instance"``), ``pair_factors`` the factor of every pair."""

    def __init__(self, bootstrap: int, seed: int, save_latents: bool = False, position: int = 0,
                 factors: tuple[str, ...] = FACTORS):
        if tuple(factors[:2]) != FACTORS:
            raise StlensError(f"`factors` must start with dynamic, static; got {', '.join(factors)}")
        self.factor_names = tuple(factors)
        self.bootstrap = bootstrap
        self.seed = seed
        self.save_latents = save_latents
        self.position = position
        self.moments: dict[str, PairedMoments] = {}
        self.factors: list[int] = []
        self.pair_factors: list[int] = []
        self.kept: dict[str, list[np.ndarray]] = {}

    def add(self, factor: np.ndarray, index: np.ndarray, pooled: dict[str, np.ndarray],
            pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Add one batch of n pairs: ``factor`` and ``index`` (n,), ``pooled`` layer → (2n, C) latents, the n first
        videos then the n second ones. Call it inside ``interrupts.deferred()`` so that the batch enters every layer
        or none.

        ``pairs``: (factor codes, global indices) of the batch's pairs when the n rows are not one per pair but
        samples of them (per-instance samples: each carries its pair's factor and index, so it shares the pair's
        bootstrap weight); None: the rows are the pairs."""
        n = len(factor)
        for name, latents in pooled.items():
            a, b = latents[:n], latents[n:]
            if name not in self.moments:
                self.moments[name] = PairedMoments(a.shape[1], bootstrap=self.bootstrap, seed=self.seed,
                                                   factors=len(self.factor_names))
            for f in range(len(self.factor_names)):
                chosen = factor == f
                if chosen.any():
                    self.moments[name].update(f, a[chosen], b[chosen], index[chosen])
            if self.save_latents:
                self.kept.setdefault(f"{name}/a", []).append(a)
                self.kept.setdefault(f"{name}/b", []).append(b)
        pair_factor, pair_index = (factor, index) if pairs is None else pairs
        self.factors.extend(int(f) for f in factor)
        self.pair_factors.extend(int(f) for f in pair_factor)
        self.position = int(np.max(pair_index)) + 1 if len(pair_index) else self.position

    @property
    def pairs(self) -> int:
        return len(self.pair_factors)

    def counts(self) -> dict[str, int]:
        """Pairs measured per factor name."""
        found = np.bincount(np.asarray(self.pair_factors, dtype=np.int64), minlength=len(self.factor_names))
        return {name: int(found[i]) for i, name in enumerate(self.factor_names)}

    def consistent(self) -> bool:
        """True when every layer holds the same pairs (a batch never enters some layers only)."""
        return len({tuple(m.n) for m in self.moments.values()}) <= 1

    def latents(self) -> dict[str, np.ndarray] | None:
        """latents.npz's arrays: ``factor`` (N,) and ``<layer>/a``, ``<layer>/b`` (N, C) float32, in pair order."""
        if not self.save_latents:
            return None
        out = {"factor": np.asarray(self.factors, dtype=np.int64)}
        out.update({key: np.concatenate(parts).astype(np.float32) for key, parts in self.kept.items()})
        return out

    # -- merging (distributed runs) -------------------------------------------------------------------------------

    def merge(self, other: Accumulator) -> Accumulator:
        """Append the pairs of ``other`` (which come after ours in pair order) in place; returns self."""
        if other.factor_names != self.factor_names:
            raise StlensError(f"cannot merge measurements of factors {other.factor_names} into {self.factor_names}")
        if other.pairs == 0:
            return self
        if self.pairs and set(other.moments) != set(self.moments):
            raise StlensError(f"cannot merge measurements of different layers: {sorted(self.moments)} and "
                              f"{sorted(other.moments)}")
        for name, moments in other.moments.items():
            if name in self.moments:
                self.moments[name].merge(moments)
            else:
                self.moments[name] = moments
        self.factors.extend(other.factors)
        self.pair_factors.extend(other.pair_factors)
        for key, parts in other.kept.items():
            self.kept.setdefault(key, []).extend(parts)
        self.position = max(self.position, other.position)
        return self

    # -- saving and loading (checkpoints) -------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays (no objects: they load with ``allow_pickle=False``) that ``from_state`` turns back into an
        equal accumulator."""
        layers = list(self.moments)
        out = {"layers": np.asarray(json.dumps(layers)), "position": np.asarray(self.position),
               "factors": np.asarray(self.factors, dtype=np.int64), "bootstrap": np.asarray(self.bootstrap),
               "seed": np.asarray(self.seed), "save_latents": np.asarray(self.save_latents)}
        if self.pair_factors != self.factors:  # per-instance samples (a default run's checkpoint stays as before)
            out["pair_factors"] = np.asarray(self.pair_factors, dtype=np.int64)
        if self.factor_names != FACTORS:  # (a default run's checkpoint stays as before)
            out["factor_names"] = np.asarray(json.dumps(list(self.factor_names)))
        for i, name in enumerate(layers):
            out.update({f"moments/{i}/{key}": value for key, value in self.moments[name].state().items()})
        for key, parts in (self.latents() or {}).items():
            if key != "factor":
                out[f"latents/{key}"] = parts
        return out

    @classmethod
    def from_state(cls, state) -> Accumulator:
        """Rebuild an accumulator from ``state()``'s arrays (a dict or an opened .npz)."""
        keys = list(state.files if hasattr(state, "files") else state)
        names = tuple(json.loads(str(state["factor_names"]))) if "factor_names" in keys else FACTORS
        acc = cls(int(state["bootstrap"]), int(state["seed"]), bool(state["save_latents"]), int(state["position"]),
                  factors=names)
        acc.factors = [int(f) for f in np.asarray(state["factors"])]
        acc.pair_factors = ([int(f) for f in np.asarray(state["pair_factors"])] if "pair_factors" in keys
                            else list(acc.factors))
        for i, name in enumerate(json.loads(str(state["layers"]))):
            prefix = f"moments/{i}/"
            acc.moments[name] = PairedMoments.from_state(
                {key[len(prefix):]: np.asarray(state[key]) for key in keys if key.startswith(prefix)})
        for key in keys:
            if key.startswith("latents/"):
                acc.kept[key[len("latents/"):]] = [np.asarray(state[key])]
        return acc
