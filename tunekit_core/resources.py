"""Resource requests: ``resources_per_trial`` dicts and placement-group factories."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Internal canonical keys; custom resources keep the user's names.
CPU = "CPU"
GPU = "GPU"
MEMORY = "memory"


class PlacementGroupFactory:
    """A per-trial set of resource bundles (Ray Tune's ``PlacementGroupFactory``).

    On the local executor the bundles of one trial are summed on this machine; the
    Ray executor turns them into a real placement group with ``strategy``.
    """

    def __init__(self, bundles: list[Mapping[str, float]], strategy: str = "PACK", *args, **kwargs):
        if not bundles or not isinstance(bundles, (list, tuple)):
            raise ValueError(
                "PlacementGroupFactory needs a non-empty list of bundles, e.g. "
                "PlacementGroupFactory([{'CPU': 1}, {'CPU': 2}])."
            )
        self.bundles = [_canonical(dict(b), where="PlacementGroupFactory bundle") for b in bundles]
        if strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError(
                f"Unknown placement strategy {strategy!r}; use one of PACK, SPREAD, "
                "STRICT_PACK, STRICT_SPREAD."
            )
        self.strategy = strategy
        self._required: dict[str, float] | None = None
        self._args = args
        self._kwargs = kwargs

    @property
    def head_bundle_is_empty(self) -> bool:
        return not any(self.bundles[0].values())

    @property
    def required_resources(self) -> dict[str, float]:
        """All bundles summed: what the trial needs on one machine (do not modify)."""
        required = self._required
        if required is None:
            total: dict[str, float] = {}
            for bundle in self.bundles:
                for key, value in bundle.items():
                    total[key] = total.get(key, 0.0) + value
            required = self._required = {k: v for k, v in total.items() if v}
        return required

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PlacementGroupFactory)
            and self.bundles == other.bundles
            and self.strategy == other.strategy
        )

    def __hash__(self) -> int:
        return hash((self.strategy, tuple(tuple(sorted(b.items())) for b in self.bundles)))

    def __repr__(self) -> str:
        return f"PlacementGroupFactory({self.bundles!r}, strategy={self.strategy!r})"


def _canonical(spec: dict[str, Any], where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in spec.items():
        if key == "custom_resources":
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: 'custom_resources' must be a dict, got {value!r}.")
            for ckey, cval in value.items():
                out[ckey] = out.get(ckey, 0.0) + _amount(ckey, cval, where)
            continue
        lower = key.lower()
        if lower in ("cpu", "num_cpus", "extra_cpu"):
            name = CPU
        elif lower in ("gpu", "num_gpus", "extra_gpu"):
            name = GPU
        elif lower == "memory" or lower == "extra_memory":
            name = MEMORY
        else:
            name = key
        out[name] = out.get(name, 0.0) + _amount(key, value, where)
    gpu = out.get(GPU, 0.0)
    if gpu > 1 and not float(gpu).is_integer():
        raise ValueError(
            f"{where}: a fractional GPU request above 1 ({gpu}) cannot be placed; "
            "request a fraction of one GPU (e.g. 0.5) or a whole number of GPUs."
        )
    return out


def _amount(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: resource {key!r} must be a number, got {value!r}.")
    if value < 0 or math.isnan(value):
        raise ValueError(f"{where}: resource {key!r} must be >= 0, got {value!r}.")
    return float(value)


def to_placement_group_factory(spec: Any) -> PlacementGroupFactory:
    """Normalise a ``resources_per_trial`` value into a :class:`PlacementGroupFactory`.

    ``None`` means one CPU, as in Ray Tune.
    """
    if spec is None:
        return PlacementGroupFactory([{CPU: 1.0}])
    if isinstance(spec, PlacementGroupFactory):
        return spec
    if isinstance(spec, Mapping):
        canonical = _canonical(dict(spec), where="resources_per_trial")
        if CPU not in canonical:
            canonical[CPU] = 1.0
        return PlacementGroupFactory([canonical])
    raise TypeError(
        "resources_per_trial must be a dict such as {'cpu': 1, 'gpu': 0.5} or a "
        f"PlacementGroupFactory, got {type(spec).__name__}."
    )


def format_resources(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) or "nothing"
