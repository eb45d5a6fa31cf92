"""tunekit's default search algorithm: random and grid search (Ray Tune's BasicVariantGenerator).

Registered under the ``tunekit.searchers`` names ``variant_generator``,
``random`` and ``grid``.
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Mapping
from typing import Any

from tunekit_core.searcher import Searcher
from tunekit_core.space import (
    CompiledSpace,
    Domain,
    compile_space,
    make_rng,
)

__all__ = ["BasicVariantGenerator"]

logger = logging.getLogger(__name__)

_UNSET = object()


def _overlay(space: Any, point: Mapping, where: str, index: int) -> Any:
    """The search space with the values of ``point`` (a partial config) fixed."""
    if not isinstance(space, dict):
        raise ValueError(
            f"points_to_evaluate[{index}] sets keys under '{where or '<root>'}', which is "
            f"not a dict in the search space."
        )
    merged = dict(space)
    for key, value in point.items():
        path = f"{where}/{key}" if where else str(key)
        if key not in space:
            raise ValueError(
                f"points_to_evaluate[{index}] sets '{path}', which is not a key of the "
                f"search space. Add it to the config passed to tune.run, or remove it "
                f"from the point."
            )
        current = space[key]
        is_plain_dict = isinstance(current, dict) and not (
            len(current) == 1 and ("grid_search" in current or "eval" in current)
        )
        if isinstance(value, Mapping) and is_plain_dict:
            merged[key] = _overlay(current, value, path, index)
            continue
        if isinstance(current, dict) and len(current) == 1 and "grid_search" in current:
            grid = current["grid_search"]
            if isinstance(grid, (list, tuple, range)) and value not in list(grid):
                logger.warning(
                    "points_to_evaluate[%d]: value %r of '%s' is not one of its grid values %r.",
                    index,
                    value,
                    path,
                    list(grid),
                )
        elif isinstance(current, Domain):
            if not current.is_valid(value):
                logger.warning(
                    "points_to_evaluate[%d]: value %r of '%s' is outside its domain %s.",
                    index,
                    value,
                    path,
                    current.domain_str,
                )
        merged[key] = copy.deepcopy(value)
    return merged


class BasicVariantGenerator(Searcher):
    """Random and grid search over a tunekit search space (Ray Tune semantics).

    For each of the ``num_samples`` repetitions every grid point of the space
    is generated once, with random parameters sampled afresh each time, so a
    run creates ``grid points x num_samples`` trials. With ``num_samples=-1``
    it generates configs forever (``total_samples`` is then None). Configs are
    generated lazily, one per :meth:`suggest`.

    Args:
        points_to_evaluate: Configs to try first. Each point replaces one of
            the ``num_samples`` repetitions; keys it leaves out are filled from
            the search space (a point that leaves a grid key out expands into
            that grid's points). Points are all tried even beyond num_samples.
        max_concurrent: At most this many suggested trials live at once
            (``suggest`` returns None at the limit). 0 means no limit.
        random_state: Seed (int), ``random.Random`` or numpy RNG making the
            sampled values reproducible. ``seed`` is an alias.
        constant_grid_search: Sample the random parameters once per
            repetition and keep them constant across the grid points.
    """

    def __init__(
        self,
        points_to_evaluate: list[dict] | None = None,
        max_concurrent: int = 0,
        random_state: Any = None,
        *,
        seed: Any = _UNSET,
        constant_grid_search: bool = False,
    ) -> None:
        super().__init__(metric=None, mode=None)
        if seed is not _UNSET:
            if random_state is not None and random_state is not seed:
                raise ValueError("Pass either `random_state` or its alias `seed`, not both.")
            random_state = seed
        if points_to_evaluate is None:
            points_to_evaluate = []
        if not isinstance(points_to_evaluate, (list, tuple)) or not all(
            isinstance(p, Mapping) for p in points_to_evaluate
        ):
            raise ValueError(
                f"points_to_evaluate must be a list of config dicts, got {points_to_evaluate!r}."
            )
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ValueError(f"max_concurrent must be an int >= 0, got {max_concurrent!r}.")
        if max_concurrent < 0:
            raise ValueError(f"max_concurrent must be >= 0 (0 = no limit), got {max_concurrent}.")
        self._points: list[dict] = [copy.deepcopy(dict(p)) for p in points_to_evaluate]
        self.max_concurrent = max_concurrent
        self._constant_grid_search = bool(constant_grid_search)
        self._rng = make_rng(random_state)
        self._live_trials: set[str] = set()
        self._space: dict | None = None
        self._num_samples: int = 1
        self._restored = False
        self._reset_position()
        self.total_samples = 0
        # Compiled forms (never saved; rebuilt from the space on demand).
        self._compiled: CompiledSpace | None = None
        self._compiled_points: dict[int, CompiledSpace] = {}

    # -- position -----------------------------------------------------------

    def _reset_position(self) -> None:
        self._point_index = 0  # next point of points_to_evaluate
        self._point_variant = 0  # next grid point of that point
        self._repetition = 0  # repetitions of the whole grid done
        self._grid_index = 0  # next grid point in the current repetition
        self._const_cache: dict | None = {} if self._constant_grid_search else None
        self._finished = False
        self._num_suggested = 0

    @property
    def _repetitions(self) -> int | None:
        """Number of grid repetitions after the points (None = infinite)."""
        if self._num_samples < 0:
            return None
        return max(0, self._num_samples - len(self._points))

    # -- Searcher API -------------------------------------------------------

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take the search space ``config`` and ``num_samples`` (-1 = forever)."""
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min', 'max' or None, got {mode!r}.")
        if metric is not None and self._metric is None:
            self._metric = metric
        if mode is not None and self._mode is None:
            self._mode = mode
        space = {} if config is None else config
        compiled = compile_space(space)
        self._space = space
        self._compiled = compiled
        self._compiled_points = {}
        if not self._restored:
            num_samples = spec.get("num_samples", 1)
            if num_samples is None:
                num_samples = 1
            if isinstance(num_samples, bool) or not isinstance(num_samples, int):
                raise ValueError(
                    f"num_samples must be an int (-1 = infinite), got {num_samples!r}."
                )
            self._num_samples = num_samples
            self._reset_position()
        self._update_total_samples()
        return True

    def _update_total_samples(self) -> None:
        assert self._compiled is not None
        repetitions = self._repetitions
        if repetitions is None:
            self.total_samples = None
            return
        total = repetitions * self._compiled.grid_count
        for i in range(len(self._points)):
            total += self._point_space(i).grid_count
        self.total_samples = total

    def _point_space(self, index: int) -> CompiledSpace:
        compiled = self._compiled_points.get(index)
        if compiled is None:
            assert self._space is not None
            compiled = compile_space(_overlay(self._space, self._points[index], "", index))
            self._compiled_points[index] = compiled
        return compiled

    def _next_config(self) -> dict | None:
        """Advance the position and build the next config (None when exhausted)."""
        if self._point_index < len(self._points):
            space = self._point_space(self._point_index)
            _, config = space.variant(self._point_variant, self._rng)
            self._point_variant += 1
            if self._point_variant >= space.grid_count:
                self._point_index += 1
                self._point_variant = 0
            return config
        repetitions = self._repetitions
        if repetitions is not None and self._repetition >= repetitions:
            return None
        space = self._compiled
        assert space is not None
        _, config = space.variant(self._grid_index, self._rng, self._const_cache)
        self._grid_index += 1
        if self._grid_index >= space.grid_count:
            self._grid_index = 0
            self._repetition += 1
            if self._const_cache is not None:
                self._const_cache = {}
        return config

    def suggest(self, trial_id: str) -> dict | str | None:
        """The next config, None while at ``max_concurrent``, or FINISHED when exhausted."""
        if self._compiled is None:
            raise RuntimeError(
                "BasicVariantGenerator has no search space: tune.run calls "
                "set_search_properties(metric, mode, config, num_samples=...) before suggest()."
            )
        if self._finished:
            return Searcher.FINISHED
        if self.max_concurrent > 0 and len(self._live_trials) >= self.max_concurrent:
            return None
        config = self._next_config()
        if config is None:
            self._finished = True
            return Searcher.FINISHED
        self._live_trials.add(trial_id)
        self._num_suggested += 1
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Free the trial's concurrency slot."""
        self._live_trials.discard(trial_id)

    def is_finished(self) -> bool:
        """True once every config has been suggested."""
        return self._finished

    # -- checkpointing ------------------------------------------------------

    def get_state(self) -> dict:
        """Generator position, RNG state and settings (no generator objects).

        The search space is included when it can be pickled; a restored
        generator that then gets ``set_search_properties`` keeps its position.
        """
        state = copy.deepcopy({
            key: value
            for key, value in self.__dict__.items()
            if key not in ("_compiled", "_compiled_points", "_rng", "_space", "_space_blob_cache")
        })
        # Saved at every commit: the RNG state is an immutable tuple (no copy needed) and
        # the space is pickled once per space object.
        state["_rng_state"] = self._rng.getstate()
        state["_space_blob"] = self._pickled_space()
        return state

    def _pickled_space(self) -> bytes | None:
        space = self._space
        if space is None:
            return None
        cached = self.__dict__.get("_space_blob_cache")
        if cached is not None and cached[0] is space:
            return cached[1]
        blob = None
        try:
            import cloudpickle  # noqa: PLC0415

            blob = cloudpickle.dumps(space)
        except Exception:  # the space is supplied again by set_search_properties
            logger.debug("search space not picklable; it is not saved", exc_info=True)
        self._space_blob_cache = (space, blob)
        return blob

    def set_state(self, state: dict) -> None:
        state = dict(state)
        rng_state = state.pop("_rng_state")
        blob = state.pop("_space_blob", None)
        self.__dict__.update(state)
        self._rng.setstate(rng_state)
        self._restored = True
        self._compiled_points = {}
        if self._space is None and blob is not None:
            self._space = pickle.loads(blob)
        if self._space is not None:
            self._compiled = compile_space(self._space)
            self._update_total_samples()
