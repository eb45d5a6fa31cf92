"""Search-space primitives and variant resolution, with Ray Tune's semantics.

A *search space* is a plain config dict whose values may be

* a :class:`Domain` created by :func:`uniform`, :func:`choice`, :func:`randint`,
  :func:`sample_from`, ... (sampled once per trial),
* a grid, written ``grid_search([...])`` (== ``{"grid_search": [...]}``): every
  value is tried, and several grids combine as a cartesian product,
* ``{"eval": "<python expression>"}``: a sample_from written as a string (for
  JSON/YAML specs), evaluated with ``spec``, ``random`` and ``np`` in scope,
* anything else: a constant, copied into every trial's config.

Domains and grids may sit anywhere: in nested dicts and inside lists/tuples.
:func:`generate_variants` turns a space into resolved configs in Ray Tune's
order (grid points of the cartesian product, the grid whose path sorts first
varying fastest; random values sampled afresh for every grid point;
``sample_from`` functions resolved last, in as many passes as their mutual
dependencies need).

Sampling uses the standard library's :mod:`random` (no numpy import), so this
module imports quickly. ``random_state`` everywhere accepts ``None`` (the global
``random`` module, so ``random.seed()`` makes runs reproducible), an ``int``
seed, a :class:`random.Random`, or a numpy ``Generator``/``RandomState`` (a seed
is drawn from it).
"""

from __future__ import annotations

import copy
import math
import numbers
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "Domain",
    "Float",
    "Integer",
    "Categorical",
    "Function",
    "Sampler",
    "BaseSampler",
    "Uniform",
    "LogUniform",
    "Normal",
    "Quantized",
    "Grid",
    "RecursiveDependencyError",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "randn",
    "qrandn",
    "randint",
    "qrandint",
    "lograndint",
    "qlograndint",
    "choice",
    "grid_search",
    "sample_from",
    "generate_variants",
    "has_unresolved_values",
    "searched_paths",
    "get_path",
    "set_path",
    "flatten_dict",
    "flatten_resolved_vars",
    "format_vars",
    "count_grid_points",
    "compile_space",
    "make_rng",
    "CompiledSpace",
]

Path = tuple

# --------------------------------------------------------------------------- #
# Random state handling
# --------------------------------------------------------------------------- #


def _as_rng(random_state: Any) -> Any:
    """Normalise ``random_state`` to an object with the :class:`random.Random` API.

    ``None`` gives the :mod:`random` module itself (global state); an int seeds
    a new :class:`random.Random`; a numpy ``Generator``/``RandomState`` is used
    to draw a seed (numpy is never imported here).
    """
    if random_state is None:
        return random
    if isinstance(random_state, random.Random):
        return random_state
    if isinstance(random_state, bool):
        raise TypeError("random_state must be None, an int seed, random.Random or a numpy RNG")
    if isinstance(random_state, numbers.Integral):
        return random.Random(int(random_state))
    # numpy.random.Generator
    if hasattr(random_state, "integers") and hasattr(random_state, "bit_generator"):
        return random.Random(int(random_state.integers(0, 2**63 - 1)))
    # numpy.random.RandomState
    if hasattr(random_state, "randint") and hasattr(random_state, "random_sample"):
        return random.Random(int(random_state.randint(0, 2**31 - 1)))
    # A wrapper exposing the numpy RNG as `.rng` (e.g. Ray's compat wrapper).
    inner = getattr(random_state, "rng", None)
    if inner is not None and inner is not random_state:
        return _as_rng(inner)
    raise TypeError(
        f"random_state must be None, an int seed, a random.Random or a numpy "
        f"Generator/RandomState; got {type(random_state).__name__}."
    )


def make_rng(random_state: Any = None) -> random.Random:
    """Return a private :class:`random.Random` for ``random_state``.

    Unlike the internal normalisation used by :meth:`Domain.sample`, ``None``
    does not share the global generator: it returns a new generator seeded from
    the global one, so ``random.seed(0)`` beforehand still gives reproducible
    results while the generator's state can be saved and restored on its own.
    """
    if random_state is None:
        return random.Random(random.getrandbits(64))
    rng = _as_rng(random_state)
    if rng is random:  # pragma: no cover - _as_rng returns the module only for None
        return random.Random(random.getrandbits(64))
    return rng


# --------------------------------------------------------------------------- #
# Small validation helpers
# --------------------------------------------------------------------------- #


def _real(name: str, value: Any, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{fn}: `{name}` must be a real number, got {value!r}.")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{fn}: `{name}` must not be NaN.")
    return value


def _finite(name: str, value: Any, fn: str) -> float:
    value = _real(name, value, fn)
    if math.isinf(value):
        raise ValueError(f"{fn}: `{name}` must be finite, got {value!r}.")
    return value


def _integer(name: str, value: Any, fn: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{fn}: `{name}` must be an integer, got {value!r}.")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    raise ValueError(f"{fn}: `{name}` must be an integer, got {value!r}.")


def _check_q(q: Any, fn: str) -> float | int:
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise ValueError(f"{fn}: the quantization step `q` must be a positive number, got {q!r}.")
    if not q > 0 or math.isinf(q):
        raise ValueError(f"{fn}: the quantization step `q` must be > 0 and finite, got {q!r}.")
    return int(q) if isinstance(q, numbers.Integral) else float(q)


def _check_base(base: Any, fn: str) -> float:
    base = _finite("base", base, fn)
    if base <= 0 or base == 1:
        raise ValueError(f"{fn}: `base` must be positive and != 1, got {base!r}.")
    return base


def _fmt_path(path: Path) -> str:
    return "/".join(str(p) for p in path) if path else "<root>"


# --------------------------------------------------------------------------- #
# Samplers
# --------------------------------------------------------------------------- #


class Sampler:
    """How a :class:`Domain` draws values (uniformly, log-uniformly, ...).

    Samplers are plain descriptions that converters (Optuna, Hyperopt, ...)
    inspect with ``isinstance``; the drawing itself is done by the domain.
    """

    def sample(
        self,
        domain: Domain,
        spec: Any = None,
        size: int = 1,
        random_state: Any = None,
    ) -> Any:
        """Draw ``size`` values of ``domain`` with this sampler (one value if size == 1)."""
        rng = _as_rng(random_state)
        values = [domain._draw(self, rng, spec) for _ in range(size)]
        return values[0] if size == 1 else values

    def __repr__(self) -> str:
        return type(self).__name__


class BaseSampler(Sampler):
    """Sampler of a :class:`Function` domain: call the function."""

    def __str__(self) -> str:
        return "Base"


class Uniform(Sampler):
    """Uniform sampling over the domain's range (or its categories)."""

    def __str__(self) -> str:
        return "Uniform"


class LogUniform(Sampler):
    """Log-uniform sampling between the domain's (positive) bounds.

    ``base`` is kept for introspection; the distribution does not depend on it.
    """

    def __init__(self, base: float = 10) -> None:
        self.base = _check_base(base, "LogUniform")

    def __str__(self) -> str:
        return "LogUniform"

    def __repr__(self) -> str:
        return f"LogUniform(base={self.base!r})"


class Normal(Sampler):
    """Normal (Gaussian) sampling with ``mean`` and standard deviation ``sd``."""

    def __init__(self, mean: float = 0.0, sd: float = 1.0) -> None:
        self.mean = _finite("mean", mean, "Normal")
        self.sd = _finite("sd", sd, "Normal")
        if not self.sd > 0:
            raise ValueError(f"Normal: `sd` must be > 0, got {sd!r}.")

    def __str__(self) -> str:
        return "Normal"

    def __repr__(self) -> str:
        return f"Normal(mean={self.mean!r}, sd={self.sd!r})"


def _decimal_places(q: float) -> int | None:
    """Number of decimals in the shortest repr of ``q`` (None if more than 15)."""
    text = repr(q)
    mantissa, _, exp = text.partition("e")
    decimals = len(mantissa.partition(".")[2].rstrip("0")) - (int(exp) if exp else 0)
    if decimals > 15:
        return None
    return max(decimals, 0)


class Quantized(Sampler):
    """Wraps another sampler and rounds its values to multiples of ``q``.

    Quantization makes the upper bound inclusive.
    """

    def __init__(self, sampler: Sampler, q: float | int) -> None:
        if not isinstance(sampler, Sampler):
            raise ValueError(f"Quantized expects a Sampler instance, got {sampler!r}.")
        self.sampler = sampler
        self.q = _check_q(q, "Quantized")
        # Decimal places of q, used to print 0.30000000000000004 as 0.3.
        self._decimals = _decimal_places(float(self.q))

    def get_sampler(self) -> Sampler:
        """The wrapped (unquantized) sampler."""
        return self.sampler

    def __str__(self) -> str:
        return "Quantized"

    def __repr__(self) -> str:
        return f"Quantized({self.sampler!r}, q={self.q!r})"


class Grid(Sampler):
    """Marker sampler of a grid-search :class:`Categorical` (never sampled)."""

    def sample(self, domain: Domain, spec: Any = None, size: int = 1, random_state: Any = None):
        raise RuntimeError("A grid_search domain is enumerated, not sampled.")

    def __str__(self) -> str:
        return "Grid"


# --------------------------------------------------------------------------- #
# Domains
# --------------------------------------------------------------------------- #


class Domain:
    """A parameter's type and valid range, plus the sampler that draws from it.

    Subclasses: :class:`Float`, :class:`Integer`, :class:`Categorical`,
    :class:`Function`. ``sampler`` is ``None`` until a sampler is chosen (then
    :meth:`get_sampler` returns the default one).
    """

    sampler: Sampler | None = None
    default_sampler_cls: type[Sampler] = Uniform

    def cast(self, value: Any) -> Any:
        """Cast ``value`` to the domain's type."""
        return value

    def set_sampler(self, sampler: Sampler, allow_override: bool = False) -> None:
        """Choose the sampler; only once unless ``allow_override``."""
        if self.sampler is not None and not allow_override:
            raise ValueError(
                f"{type(self).__name__} already has the sampler {self.sampler!r}; "
                f"a parameter domain takes a single sampler (tried to add {sampler!r})."
            )
        self.sampler = sampler

    def get_sampler(self) -> Sampler:
        """The sampler in use (the default one when none was chosen)."""
        return self.sampler if self.sampler is not None else self.default_sampler_cls()

    def sample(self, spec: Any = None, size: int = 1, random_state: Any = None) -> Any:
        """Draw one value (``size == 1``) or a list of ``size`` values.

        ``spec`` is only used by :class:`Function` domains; ``random_state`` is
        ``None``, an int seed, a :class:`random.Random` or a numpy RNG.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"sample: `size` must be a positive int, got {size!r}.")
        return self.get_sampler().sample(self, spec=spec, size=size, random_state=random_state)

    def _draw(self, sampler: Sampler, rng: Any, spec: Any = None) -> Any:
        raise NotImplementedError

    def is_grid(self) -> bool:
        """True for a grid-search domain."""
        return isinstance(self.sampler, Grid)

    def is_function(self) -> bool:
        """True for a :class:`Function` (sample_from) domain."""
        return False

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` lies in this domain."""
        raise NotImplementedError

    @property
    def domain_str(self) -> str:
        """Short description of the valid values."""
        return "(unknown)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.domain_str}, sampler={self.get_sampler()!r})"


def _with_sampler(domain: Domain, sampler: Sampler, allow_override: bool = False) -> Domain:
    new = copy.copy(domain)
    new.set_sampler(sampler, allow_override=allow_override)
    return new


def _tidy(value: float, decimals: int | None) -> float:
    return round(value, decimals) if decimals is not None else value


class Float(Domain):
    """Real-valued parameter in ``[lower, upper]`` (``None`` bound = unbounded)."""

    def __init__(self, lower: float | None, upper: float | None) -> None:
        self.lower = -math.inf if lower is None else _real("lower", lower, "Float")
        self.upper = math.inf if upper is None else _real("upper", upper, "Float")
        if not self.lower < self.upper:
            raise ValueError(
                f"Float: `lower` must be < `upper`, got lower={lower!r}, upper={upper!r}."
            )

    def cast(self, value: Any) -> float:
        return float(value)

    def uniform(self) -> Float:
        """Sample uniformly in ``[lower, upper)``; both bounds must be finite."""
        if math.isinf(self.lower) or math.isinf(self.upper):
            raise ValueError(
                f"uniform needs finite bounds, got lower={self.lower}, upper={self.upper}."
            )
        return _with_sampler(self, Uniform())

    def loguniform(self, base: float = 10) -> Float:
        """Sample log-uniformly in ``[lower, upper)``; needs ``0 < lower < upper < inf``."""
        if not (0 < self.lower and self.upper < math.inf):
            raise ValueError(
                f"loguniform needs 0 < lower < upper < inf, got lower={self.lower}, "
                f"upper={self.upper}. Pass the untransformed bounds (e.g. 1e-4, not -4)."
            )
        return _with_sampler(self, LogUniform(base))

    def normal(self, mean: float = 0.0, sd: float = 1.0) -> Float:
        """Sample from a normal distribution (the domain must be unbounded)."""
        if not (math.isinf(self.lower) and math.isinf(self.upper)):
            raise ValueError("normal sampling needs an unbounded Float(None, None) domain.")
        return _with_sampler(self, Normal(mean, sd))

    def quantized(self, q: float) -> Float:
        """Round sampled values to multiples of ``q`` (the upper bound becomes inclusive)."""
        q = _check_q(q, "quantized")
        if not (math.isinf(self.lower) or math.isinf(self.upper)):
            lo, hi = _q_bounds(self.lower, self.upper, q)
            if lo > hi:
                raise ValueError(
                    f"quantized: no multiple of q={q} lies in [{self.lower}, {self.upper}]; "
                    f"choose a smaller q or wider bounds."
                )
        return _with_sampler(self, Quantized(self.get_sampler(), q), allow_override=True)

    def _draw(self, sampler: Sampler, rng: Any, spec: Any = None) -> float:
        lower, upper = self.lower, self.upper
        if isinstance(sampler, Quantized):
            q = sampler.q
            inner = sampler.sampler
            if isinstance(inner, Normal):
                return _tidy(round(rng.gauss(inner.mean, inner.sd) / q) * q, sampler._decimals)
            lo, hi = _q_bounds(lower, upper, q)
            lo_v, hi_v = lo * q, hi * q
            if isinstance(inner, LogUniform):
                a, b = math.log(max(lo_v, lower)), math.log(min(hi_v, upper))
                v = math.exp(a + (b - a) * rng.random())
            else:
                v = lo_v + (hi_v - lo_v) * rng.random()
            k = min(max(round(v / q), lo), hi)
            return min(max(_tidy(k * q, sampler._decimals), lower), upper)
        if isinstance(sampler, LogUniform):
            a, b = math.log(lower), math.log(upper)
            v = math.exp(a + (b - a) * rng.random())
            return min(max(v, lower), upper)
        if isinstance(sampler, Normal):
            return rng.gauss(sampler.mean, sampler.sd)
        if isinstance(sampler, Uniform):
            return lower + (upper - lower) * rng.random()
        raise ValueError(f"Float cannot sample with {sampler!r}.")

    def is_valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        return self.lower <= value <= self.upper

    @property
    def domain_str(self) -> str:
        return f"({self.lower}, {self.upper})"


def _q_bounds(lower: float, upper: float, q: float) -> tuple[int, int]:
    """Index range [lo, hi] of the multiples of q inside [lower, upper] (float-tolerant)."""
    lo = math.ceil(lower / q - 1e-9)
    hi = math.floor(upper / q + 1e-9)
    return lo, hi


class Integer(Domain):
    """Integer parameter; ``upper`` is exclusive unless the sampler is quantized."""

    def __init__(self, lower: int, upper: int) -> None:
        self.lower = _integer("lower", lower, "Integer")
        self.upper = _integer("upper", upper, "Integer")
        if not self.lower < self.upper:
            raise ValueError(
                f"Integer: `lower` must be < `upper`, got lower={lower!r}, upper={upper!r}."
            )

    def cast(self, value: Any) -> int:
        return int(value)

    def uniform(self) -> Integer:
        """Sample uniformly from ``lower`` (inclusive) to ``upper`` (exclusive)."""
        return _with_sampler(self, Uniform())

    def loguniform(self, base: float = 10) -> Integer:
        """Sample log-uniformly; needs ``0 < lower``."""
        if not self.lower > 0:
            raise ValueError(
                f"lograndint needs 0 < lower < upper, got lower={self.lower}, upper={self.upper}."
            )
        return _with_sampler(self, LogUniform(base))

    def quantized(self, q: int) -> Integer:
        """Round to multiples of ``q``; makes the upper bound inclusive."""
        q = _check_q(q, "qrandint")
        if not isinstance(q, int):
            if not float(q).is_integer():
                raise ValueError(
                    f"qrandint: `q` must be an integer for integer domains, got {q!r}."
                )
            q = int(q)
        lo, hi = -(-self.lower // q), self.upper // q
        if lo > hi:
            raise ValueError(
                f"quantized: no multiple of q={q} lies in [{self.lower}, {self.upper}]; "
                f"choose a smaller q or wider bounds."
            )
        return _with_sampler(self, Quantized(self.get_sampler(), q), allow_override=True)

    def _draw(self, sampler: Sampler, rng: Any, spec: Any = None) -> int:
        lower, upper = self.lower, self.upper
        if isinstance(sampler, Quantized):
            q = int(sampler.q)
            lo, hi = -(-lower // q), upper // q  # multiples of q inside [lower, upper]
            inner = sampler.sampler
            if isinstance(inner, LogUniform):
                a, b = math.log(lower), math.log(upper)
                v = math.exp(a + (b - a) * rng.random())
                k = min(max(round(v / q), lo), hi)
            else:
                k = rng.randint(lo, hi)
            return k * q
        if isinstance(sampler, LogUniform):
            a, b = math.log(lower), math.log(upper)
            v = int(math.floor(math.exp(a + (b - a) * rng.random())))
            return min(max(v, lower), upper - 1)
        if isinstance(sampler, Uniform):
            return rng.randrange(lower, upper)
        raise ValueError(f"Integer cannot sample with {sampler!r}.")

    def is_valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if not float(value).is_integer():
            return False
        if isinstance(self.sampler, Quantized):
            return self.lower <= value <= self.upper and int(value) % int(self.sampler.q) == 0
        return self.lower <= value < self.upper

    @property
    def domain_str(self) -> str:
        return f"({self.lower}, {self.upper})"


class Categorical(Domain):
    """One of a fixed list of ``categories`` (sampled uniformly, or a grid)."""

    def __init__(self, categories: Sequence) -> None:
        if isinstance(categories, (str, bytes, Mapping)) or not hasattr(categories, "__iter__"):
            raise ValueError(
                f"choice expects a list of categories, got {type(categories).__name__} "
                f"{categories!r}."
            )
        self.categories = list(categories)
        if not self.categories:
            raise ValueError("choice expects a non-empty list of categories, got an empty one.")

    def uniform(self) -> Categorical:
        """Sample one category uniformly at random."""
        return _with_sampler(self, Uniform())

    def grid(self) -> Categorical:
        """Mark this domain as a grid search over its categories."""
        return _with_sampler(self, Grid())

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, item: int) -> Any:
        return self.categories[item]

    def _draw(self, sampler: Sampler, rng: Any, spec: Any = None) -> Any:
        if isinstance(sampler, Grid):
            raise RuntimeError("A grid_search domain is enumerated, not sampled.")
        return self.categories[rng.randrange(len(self.categories))]

    def is_valid(self, value: Any) -> bool:
        try:
            return value in self.categories
        except Exception:  # pragma: no cover - exotic __eq__
            return False

    @property
    def domain_str(self) -> str:
        return f"{self.categories}"


class Function(Domain):
    """A value computed by a user function (see :func:`sample_from`).

    The function takes either no argument or one ``spec`` argument, through
    which it reads other resolved values: ``spec.config.x`` or
    ``spec["config"]["x"]`` (and, Ray 2 style, ``spec["x"]`` / ``spec.x``).
    """

    default_sampler_cls = BaseSampler

    def __init__(self, func: Callable[..., Any]) -> None:
        if not callable(func):
            raise ValueError(f"sample_from expects a callable, got {func!r}.")
        self.func = func
        self.pass_spec = _accepts_one_arg(func)

    @property
    def pass_config(self) -> bool:
        """Alias of ``pass_spec`` (Ray's attribute name)."""
        return self.pass_spec

    def is_function(self) -> bool:
        return True

    def _call(self, spec: Any) -> Any:
        return self.func(spec) if self.pass_spec else self.func()

    def _draw(self, sampler: Sampler, rng: Any, spec: Any = None) -> Any:
        if self.pass_spec and not isinstance(spec, (_SpecView, _GuardedDict)):
            if isinstance(spec, Mapping) and set(spec) == {"config"}:
                spec = spec["config"]
            spec = _SpecView(dict(spec) if spec is not None else {})
        return self._call(spec)

    def is_valid(self, value: Any) -> bool:
        return True

    @property
    def domain_str(self) -> str:
        return f"{getattr(self.func, '__name__', self.func)}()"


def _accepts_one_arg(func: Callable[..., Any]) -> bool:
    import inspect

    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return True
    try:
        sig.bind(None)
        return True
    except TypeError:
        pass
    try:
        sig.bind()
        return False
    except TypeError:
        raise ValueError(
            "sample_from expects a function taking no argument or a single `spec` "
            f"argument; {func!r} takes neither."
        ) from None


class _EvalFunction:
    """The ``{"eval": "expr"}`` form of sample_from (picklable)."""

    def __init__(self, expr: str) -> None:
        self.expr = expr

    def __call__(self, spec: Any) -> Any:
        scope: dict[str, Any] = {"random": random}
        try:
            import numpy as np  # noqa: PLC0415 - only when an eval expression runs

            scope["np"] = np
        except ImportError:  # pragma: no cover - numpy is optional
            pass
        return eval(self.expr, scope, {"spec": spec})

    def __repr__(self) -> str:
        return f"eval({self.expr!r})"


# --------------------------------------------------------------------------- #
# Public constructors (Ray Tune signatures)
# --------------------------------------------------------------------------- #


def uniform(lower: float, upper: float) -> Float:
    """Sample a float uniformly between ``lower`` and ``upper``."""
    return Float(_finite("lower", lower, "uniform"), _finite("upper", upper, "uniform")).uniform()


def quniform(lower: float, upper: float, q: float) -> Float:
    """Sample a float uniformly in ``[lower, upper]`` rounded to a multiple of ``q``.

    Quantization makes ``upper`` inclusive.
    """
    return uniform(lower, upper).quantized(q)


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """Sample a float log-uniformly between ``lower`` and ``upper`` (both > 0)."""
    lower = _finite("lower", lower, "loguniform")
    upper = _finite("upper", upper, "loguniform")
    if not 0 < lower:
        raise ValueError(
            f"loguniform needs positive bounds, got lower={lower!r}. Pass the untransformed "
            f"bounds (e.g. 1e-4, 1e-1)."
        )
    if not lower < upper:
        raise ValueError(f"loguniform needs lower < upper, got lower={lower!r}, upper={upper!r}.")
    return Float(lower, upper).loguniform(base)


def qloguniform(lower: float, upper: float, q: float, base: float = 10) -> Float:
    """Log-uniform float in ``[lower, upper]`` rounded to a multiple of ``q`` (upper inclusive)."""
    return loguniform(lower, upper, base).quantized(q)


def randn(mean: float = 0.0, sd: float = 1.0) -> Float:
    """Sample a float from a normal distribution with ``mean`` and ``sd``."""
    return Float(None, None).normal(mean, sd)


def qrandn(mean: float, sd: float, q: float) -> Float:
    """Sample a normal float rounded to a multiple of ``q``."""
    return randn(mean, sd).quantized(q)


def randint(lower: int, upper: int) -> Integer:
    """Sample an integer uniformly; ``lower`` inclusive, ``upper`` exclusive."""
    return Integer(
        _integer("lower", lower, "randint"), _integer("upper", upper, "randint")
    ).uniform()


def qrandint(lower: int, upper: int, q: int = 1) -> Integer:
    """Sample a multiple of ``q`` uniformly; ``lower`` and ``upper`` both inclusive."""
    return randint(lower, upper).quantized(q)


def lograndint(lower: int, upper: int, base: float = 10) -> Integer:
    """Sample an integer log-uniformly; ``lower`` inclusive, ``upper`` exclusive, both > 0."""
    lower = _integer("lower", lower, "lograndint")
    upper = _integer("upper", upper, "lograndint")
    if not 0 < lower:
        raise ValueError(f"lograndint needs positive bounds, got lower={lower!r}.")
    return Integer(lower, upper).loguniform(base)


def qlograndint(lower: int, upper: int, q: int, base: float = 10) -> Integer:
    """Log-uniform integer rounded to a multiple of ``q``; both bounds inclusive."""
    return lograndint(lower, upper, base).quantized(q)


def choice(categories: Sequence) -> Categorical:
    """Sample one of ``categories`` uniformly."""
    return Categorical(categories).uniform()


def grid_search(values: Sequence) -> dict[str, Any]:
    """Try every value in ``values``; several grids combine as a cartesian product.

    With ``num_samples=N`` every grid point is repeated ``N`` times. The values
    are validated when the space is resolved (errors then name the path).
    """
    return {"grid_search": values}


def sample_from(func: Callable[..., Any]) -> Function:
    """Compute a value with ``func(spec)`` once the other values are resolved.

    ``spec.config.x`` (or ``spec["config"]["x"]``) reads another parameter's
    resolved value, including another sample_from's; cycles are an error.
    """
    return Function(func)


# --------------------------------------------------------------------------- #
# Path helpers
# --------------------------------------------------------------------------- #


def get_path(config: Any, path: Sequence) -> Any:
    """Return the value at ``path`` (a tuple of dict keys / list indices) in ``config``."""
    node = config
    for key in path:
        node = node[key]
    return node


def set_path(config: Any, path: Sequence, value: Any) -> None:
    """Set the value at ``path`` in ``config``, rebuilding tuples on the way."""
    path = tuple(path)
    if not path:
        raise ValueError("set_path needs a non-empty path.")
    parents = [config]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    new = value
    for i in range(len(path) - 1, -1, -1):
        container = parents[i]
        key = path[i]
        if isinstance(container, tuple):
            new = container[:key] + (new,) + container[key + 1 :]
            continue
        container[key] = new
        return
    raise ValueError("Cannot assign into a tuple at the root of the config.")


def lookup(d: Mapping | None, key: str, default: Any = None) -> Any:
    """``d[key]``, where a key with "/" also names a nested value (``"a/b"`` is
    ``d["a"]["b"]``), as the flattened result keys of stop criteria and metrics do.
    ``default`` when it is missing (or ``d`` is None)."""
    if not d:
        return default
    if key in d:
        return d[key]
    if "/" not in key:
        return default
    node: Any = d
    for part in key.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def flatten_dict(d: Mapping, delimiter: str = "/", prevent_delimiter: bool = False) -> dict:
    """Flatten nested dicts into one level, joining keys with ``delimiter``.

    ``{"a": {"b": 1}, "c": 2}`` -> ``{"a/b": 1, "c": 2}``. Lists are kept as
    values; empty nested dicts disappear (as in Ray Tune). With
    ``prevent_delimiter`` a key that already contains the delimiter is an error.
    """
    out: dict = {}

    def walk(prefix: str | None, node: Mapping) -> None:
        for key, value in node.items():
            if prevent_delimiter and delimiter in str(key):
                raise ValueError(
                    f"Key {key!r} contains the delimiter {delimiter!r}; rename it or "
                    f"flatten with another delimiter."
                )
            name = str(key) if prefix is None else f"{prefix}{delimiter}{key}"
            if isinstance(value, Mapping):
                walk(name, value)
            else:
                out[name if prefix is not None else key] = value

    walk(None, d)
    return out


def flatten_resolved_vars(resolved_vars: Mapping[Path, Any], delimiter: str = "/") -> dict:
    """Map path tuples to ``"a/b/0"`` strings (the form of ``Trial.evaluated_params``)."""
    return {delimiter.join(str(p) for p in path): value for path, value in resolved_vars.items()}


_INVALID_TAG_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")


def _clean_value(value: Any) -> str:
    kind = type(value)
    if kind is float:  # the common cases first: ABC checks cost more than the rest
        return f"{value:.4f}"
    if kind is int:
        return str(value)  # digits and "-" only: nothing to clean
    if kind is str:
        cleaned = _CLEANED.get(value)
        if cleaned is None:
            cleaned = _INVALID_TAG_CHARS.sub("_", value).strip("_")
            if len(_CLEANED) < 4096:  # keys and categories repeat from trial to trial
                _CLEANED[value] = cleaned
        return cleaned
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.4f}"
    return _INVALID_TAG_CHARS.sub("_", str(value)).strip("_")


_CLEANED: dict[str, str] = {}


def _path_sort_key(path: Sequence) -> tuple:
    key = []
    for p in path:
        if isinstance(p, str):
            key.append((1, p))
        elif isinstance(p, numbers.Real):
            key.append((0, p))
        else:
            key.append((2, repr(p)))
    return tuple(key)


def format_vars(resolved_vars: Mapping[Path, Any]) -> str:
    """Format resolved parameters as an experiment tag, as Ray Tune does.

    Entries are sorted by path and written ``key=value``, joined by ``,``,
    where ``key`` is the path's last element: ``{("lr",): 0.01, ("m",): 0.9}``
    -> ``"lr=0.0100,m=0.9000"``. Floats get 4 decimals; in other values and in
    keys every run of characters outside ``[a-zA-Z0-9_-]`` becomes ``_``
    (leading/trailing ``_`` stripped), so the tag is a valid directory name.
    """
    items = sorted(resolved_vars.items(), key=lambda kv: _path_sort_key(kv[0]))
    return ",".join(f"{_clean_value(path[-1])}={_clean_value(value)}" for path, value in items)


# --------------------------------------------------------------------------- #
# Classifying config values
# --------------------------------------------------------------------------- #

_ATOMS = (int, float, str, bool, bytes, complex, type(None))


def _is_grid_dict(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and "grid_search" in value


def _is_eval_dict(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and isinstance(value.get("eval"), str)


def _is_unresolved_leaf(value: Any) -> bool:
    return isinstance(value, Domain) or _is_grid_dict(value) or _is_eval_dict(value)


def has_unresolved_values(config: Any) -> bool:
    """True if ``config`` contains a Domain, a grid_search or an eval dict anywhere."""
    if _is_unresolved_leaf(config):
        return True
    if isinstance(config, dict):
        return any(has_unresolved_values(v) for v in config.values())
    if type(config) in (list, tuple):
        return any(has_unresolved_values(v) for v in config)
    return False


def _contains_grid(value: Any) -> bool:
    if _is_grid_dict(value) or (isinstance(value, Domain) and value.is_grid()):
        return True
    if isinstance(value, dict):
        return any(_contains_grid(v) for v in value.values())
    if type(value) in (list, tuple):
        return any(_contains_grid(v) for v in value)
    if isinstance(value, Categorical):
        return any(_contains_grid(v) for v in value.categories)
    return False


def searched_paths(config: Mapping) -> list[Path]:
    """Paths (tuples of keys/indices) that hold a Domain, grid_search or eval dict."""
    out: list[Path] = []

    def walk(node: Any, path: Path) -> None:
        if _is_unresolved_leaf(node):
            out.append(path)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif type(node) in (list, tuple):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(config, ())
    return out


# --------------------------------------------------------------------------- #
# Compiled spaces: fast repeated variant construction
# --------------------------------------------------------------------------- #


class RecursiveDependencyError(ValueError):
    """sample_from functions could not be resolved (a dependency cycle or an unresolvable read)."""


class _Unresolved(Exception):
    """Raised inside a sample_from function when it reads a value not resolved yet."""

    def __init__(self, path: Path) -> None:
        super().__init__(_fmt_path(path))
        self.path = path


class _PendingValue:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unresolved sample_from>"


_PENDING = _PendingValue()


class _Ctx:
    __slots__ = ("rng", "resolved", "grid_idx", "grid_built", "pending", "const_cache")

    def __init__(self, rng: Any, grid_idx: list[int], const_cache: dict | None) -> None:
        self.rng = rng
        self.resolved: dict[Path, Any] = {}
        self.grid_idx = grid_idx
        self.grid_built: dict[Path, Any] = {}
        self.pending: list[tuple[Path, Function]] = []
        self.const_cache = const_cache


class _Const:
    __slots__ = ("value", "copy")

    def __init__(self, value: Any, needs_copy: bool) -> None:
        self.value = value
        self.copy = needs_copy

    def build(self, ctx: _Ctx) -> Any:
        return copy.deepcopy(self.value) if self.copy else self.value


class _DictNode:
    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items

    def build(self, ctx: _Ctx) -> dict:
        return {k: n.build(ctx) for k, n in self.items}


class _SeqNode:
    __slots__ = ("children", "is_tuple")

    def __init__(self, children: list, is_tuple: bool) -> None:
        self.children = children
        self.is_tuple = is_tuple

    def build(self, ctx: _Ctx) -> Any:
        values = [n.build(ctx) for n in self.children]
        return tuple(values) if self.is_tuple else values


class _DomainNode:
    __slots__ = ("path", "domain", "sampler", "top")

    def __init__(self, path: Path, domain: Domain, top: bool) -> None:
        self.path = path
        self.domain = domain
        self.sampler = domain.get_sampler()
        self.top = top

    def build(self, ctx: _Ctx) -> Any:
        cache = ctx.const_cache
        if cache is not None and self.top:
            if self.path in cache:
                value = cache[self.path]
            else:
                value = cache[self.path] = self.domain._draw(self.sampler, ctx.rng)
        else:
            value = self.domain._draw(self.sampler, ctx.rng)
        ctx.resolved[self.path] = value
        return value


class _ChoiceNode:
    """A choice whose categories contain nested search spaces."""

    __slots__ = ("path", "nodes", "top")

    def __init__(self, path: Path, nodes: list, top: bool) -> None:
        self.path = path
        self.nodes = nodes
        self.top = top

    def build(self, ctx: _Ctx) -> Any:
        cache = ctx.const_cache
        if cache is not None and self.top and self.path in cache:
            index = cache[self.path]
        else:
            index = ctx.rng.randrange(len(self.nodes))
            if cache is not None and self.top:
                cache[self.path] = index
        value = self.nodes[index].build(ctx)
        ctx.resolved[self.path] = value
        return value


class _GridNode:
    __slots__ = ("path", "nodes", "position")

    def __init__(self, path: Path, nodes: list, position: int) -> None:
        self.path = path
        self.nodes = nodes
        self.position = position

    def build(self, ctx: _Ctx) -> Any:
        value = self.nodes[ctx.grid_idx[self.position]].build(ctx)
        ctx.grid_built[self.path] = value
        return value


class _FuncNode:
    __slots__ = ("path", "domain")

    def __init__(self, path: Path, domain: Function) -> None:
        self.path = path
        self.domain = domain

    def build(self, ctx: _Ctx) -> Any:
        ctx.pending.append((self.path, self.domain))
        return _PENDING


def _needs_copy(value: Any) -> bool:
    if type(value) in _ATOMS:
        return False
    if type(value) in (tuple, frozenset) and all(type(v) in _ATOMS for v in value):
        return False
    try:
        copy.deepcopy(value)
    except Exception:
        # Not copyable (locks, open files, ...): share the object between trials.
        return False
    return True


class _Compiler:
    def __init__(self) -> None:
        self.grids: list[tuple[Path, list]] = []  # (path, values) in traversal order
        self.grid_nodes: list[_GridNode] = []

    def compile(self, value: Any, path: Path, top: bool) -> Any:
        if isinstance(value, Domain):
            return self._domain(value, path, top)
        if type(value) is dict or isinstance(value, dict):
            if _is_grid_dict(value):
                return self._grid(value["grid_search"], path, top)
            if _is_eval_dict(value):
                return _FuncNode(path, Function(_EvalFunction(value["eval"])))
            items = [(k, self.compile(v, path + (k,), top)) for k, v in value.items()]
            if all(isinstance(n, _Const) for _, n in items):
                return _Const(value, _needs_copy(value))
            return _DictNode(items)
        if type(value) in (list, tuple):
            children = [self.compile(v, path + (i,), top) for i, v in enumerate(value)]
            if all(isinstance(n, _Const) for n in children):
                return _Const(value, any(n.copy for n in children))
            return _SeqNode(children, type(value) is tuple)
        return _Const(value, _needs_copy(value))

    def _domain(self, domain: Domain, path: Path, top: bool) -> Any:
        if domain.is_grid():
            return self._grid(domain.categories, path, top)
        if domain.is_function():
            return _FuncNode(path, domain)  # type: ignore[arg-type]
        if isinstance(domain, Float) and not isinstance(domain.get_sampler(), (Normal, Quantized)):
            if math.isinf(domain.lower) or math.isinf(domain.upper):
                raise ValueError(
                    f"Invalid search space at '{_fmt_path(path)}': {domain!r} needs finite "
                    f"bounds for {domain.get_sampler()} sampling."
                )
        if isinstance(domain, Categorical) and any(
            type(c) not in _ATOMS for c in domain.categories
        ):
            nodes = []
            for i, category in enumerate(domain.categories):
                if _contains_grid(category):
                    raise ValueError(
                        f"Invalid search space at '{_fmt_path(path)}': category {i} of "
                        f"choice() contains a grid_search. Grids cannot be nested inside "
                        f"a choice; move the grid_search to its own config key."
                    )
                nodes.append(self.compile(category, path, top=False))
            return _ChoiceNode(path, nodes, top)
        return _DomainNode(path, domain, top)

    def _grid(self, values: Any, path: Path, top: bool) -> Any:
        where = _fmt_path(path)
        if not top:
            raise ValueError(
                f"Invalid search space at '{where}': grid_search cannot be nested inside "
                f"another grid_search value, a choice category or a sample_from result. "
                f"Move it to its own config key."
            )
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, (list, tuple, range)
        ):
            raise ValueError(
                f"Invalid search space at '{where}': grid_search expects a list of values, "
                f"got {type(values).__name__} {values!r}. Write tune.grid_search([v1, v2, ...])."
            )
        values = list(values)
        if not values:
            raise ValueError(
                f"Invalid search space at '{where}': grid_search got an empty list; give it "
                f"at least one value."
            )
        nodes = []
        for i, v in enumerate(values):
            if isinstance(v, Domain) or _is_eval_dict(v):
                raise ValueError(
                    f"Invalid search space at '{where}': grid_search value {i} is a search "
                    f"domain ({v!r}); grid values must be concrete. Use choice() to pick "
                    f"between distributions, or list concrete values."
                )
            if _contains_grid(v):
                raise ValueError(
                    f"Invalid search space at '{where}': grid_search value {i} contains "
                    f"another grid_search; nested grids are not supported. Move the inner "
                    f"grid_search to its own config key."
                )
            nodes.append(self.compile(v, path, top=False))
        node = _GridNode(path, nodes, -1)
        self.grids.append((path, values))
        self.grid_nodes.append(node)
        return node


class CompiledSpace:
    """A search space prepared for fast, repeated variant construction.

    Build with :func:`compile_space`. ``grid_count`` is the number of grid
    points; :meth:`variant` builds the config of grid point ``index`` (the
    grid whose path sorts first varies fastest, as in Ray Tune).
    """

    def __init__(self, config: Mapping) -> None:
        if not isinstance(config, Mapping):
            raise ValueError(
                f"A search space must be a dict, got {type(config).__name__} {config!r}."
            )
        if not isinstance(config, dict):
            config = dict(config)
        self.config = config
        compiler = _Compiler()
        self._root = compiler.compile(config, (), top=True)
        order = sorted(
            range(len(compiler.grids)), key=lambda i: _path_sort_key(compiler.grids[i][0])
        )
        self.grid_paths: list[Path] = [compiler.grids[i][0] for i in order]
        self.grid_values: list[list] = [compiler.grids[i][1] for i in order]
        for position, i in enumerate(order):
            compiler.grid_nodes[i].position = position
        self._grid_sizes = [len(v) for v in self.grid_values]
        count = 1
        for n in self._grid_sizes:
            count *= n
        self.grid_count: int = count
        self.is_constant: bool = isinstance(self._root, _Const)

    def grid_indices(self, index: int) -> list[int]:
        """Per-grid value indices of grid point ``index`` (first grid fastest)."""
        if not 0 <= index < self.grid_count:
            raise IndexError(f"grid point {index} out of range [0, {self.grid_count}).")
        out = []
        for n in self._grid_sizes:
            index, i = divmod(index, n)
            out.append(i)
        return out

    def variant(
        self, index: int, rng: Any, const_cache: dict | None = None
    ) -> tuple[dict[Path, Any], dict]:
        """Build grid point ``index`` with fresh random values drawn from ``rng``.

        Returns ``(resolved_vars, config)``: ``resolved_vars`` maps each searched
        path to its value (random values, then sample_from values, then grid
        values in sorted path order). ``const_cache`` (a dict kept by the
        caller) makes top-level random values constant across calls.
        """
        ctx = _Ctx(rng, self.grid_indices(index) if self._grid_sizes else [], const_cache)
        config = self._root.build(ctx)
        if self.is_constant and config is self.config:
            config = dict(config)
        if ctx.pending:
            _resolve_functions(config, ctx)
        resolved = ctx.resolved
        for path in self.grid_paths:
            resolved[path] = ctx.grid_built[path]
        return resolved, config


def compile_space(config: Mapping) -> CompiledSpace:
    """Validate ``config`` and prepare it for repeated sampling.

    Raises ``ValueError`` naming the path of a malformed entry (a grid_search
    that is not a non-empty list, a domain used as a grid value, nested grids).
    """
    return CompiledSpace(config)


# --------------------------------------------------------------------------- #
# sample_from resolution
# --------------------------------------------------------------------------- #


class _GuardedDict(dict):
    """A dict view of (part of) the config handed to sample_from functions.

    Reading a value that is still unresolved raises ``_Unresolved``, so the
    function is retried after the value it needs has been resolved. Supports
    attribute access (``spec.config.lr``) as well as item access.
    """

    __slots__ = ("_path",)

    def __init__(self, data: Mapping, path: Path) -> None:
        super().__init__(data)
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        return _guard(value, self._path + (key,))

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"config has no key {name!r} (at '{_fmt_path(self._path + (name,))}')"
            ) from None


class _GuardedList(list):
    __slots__ = ("_path",)

    def __init__(self, data: Sequence, path: Path) -> None:
        super().__init__(data)
        self._path = path

    def __getitem__(self, index: Any) -> Any:
        value = list.__getitem__(self, index)
        if isinstance(index, slice):
            return [_guard(v, self._path) for v in value]
        return _guard(value, self._path + (index,))

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]


def _holds_pending(value: Any) -> bool:
    if value is _PENDING:
        return True
    if isinstance(value, dict):
        return any(_holds_pending(v) for v in value.values())
    if type(value) in (list, tuple):
        return any(_holds_pending(v) for v in value)
    return False


def _guard(value: Any, path: Path) -> Any:
    if value is _PENDING:
        raise _Unresolved(path)
    if isinstance(value, dict) and not isinstance(value, _GuardedDict):
        return _GuardedDict(value, path)
    if type(value) in (list, tuple) and _holds_pending(value):
        return _GuardedList(value, path)
    return value


class _SpecView(_GuardedDict):
    """The ``spec`` argument of sample_from functions.

    ``spec.config`` / ``spec["config"]`` is the (partially resolved) config;
    other keys fall through to the config itself (Ray 2 style ``spec["lr"]``).
    """

    __slots__ = ("_config",)

    def __init__(self, config: dict) -> None:
        super().__init__(config, ())
        self._config = config

    def __getitem__(self, key: Any) -> Any:
        if key == "config":
            return _GuardedDict(self._config, ())
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        return key == "config" or dict.__contains__(self, key)


def _resolve_functions(config: dict, ctx: _Ctx) -> None:
    spec = _SpecView(config)
    pending = ctx.pending
    while pending:
        ctx.pending = []
        still: list[tuple[Path, Function, Path]] = []
        progressed = False
        for item in pending:
            path, domain = item[0], item[1]
            try:
                value = domain._call(spec)
            except _Unresolved as exc:
                still.append((path, domain, exc.path))
                continue
            except Exception as exc:
                raise ValueError(
                    f"sample_from at '{_fmt_path(path)}' failed: {type(exc).__name__}: {exc}"
                ) from exc
            if isinstance(value, (_GuardedDict, _GuardedList)):
                value = copy.deepcopy(dict(value) if isinstance(value, dict) else list(value))
            if has_unresolved_values(value):
                if _contains_grid(value):
                    raise ValueError(
                        f"Invalid search space at '{_fmt_path(path)}': the sample_from result "
                        f"contains a grid_search, which cannot be expanded there."
                    )
                node = _Compiler().compile(value, path, top=False)
                value = node.build(ctx)
            set_path(config, path, value)
            spec = _SpecView(config)
            ctx.resolved[path] = value
            progressed = True
        # Functions revealed by resolved values join the next pass.
        pending = [(p, d) for p, d, _ in still] + ctx.pending
        if still and not progressed and not ctx.pending:
            details = "; ".join(f"'{_fmt_path(p)}' reads '{_fmt_path(dep)}'" for p, _, dep in still)
            raise RecursiveDependencyError(
                f"Could not resolve sample_from values: {details}, which never gets a value "
                f"(circular dependency between sample_from functions?). Break the cycle so "
                f"that every sample_from only reads values that can be resolved first."
            )
    ctx.pending = []


# --------------------------------------------------------------------------- #
# Variant generation
# --------------------------------------------------------------------------- #


def generate_variants(
    config: Mapping,
    random_state: Any = None,
    constant_grid_search: bool = False,
) -> Iterator[tuple[dict[Path, Any], dict]]:
    """Yield ``(resolved_vars, resolved_config)`` for every grid point of ``config``.

    Grid points come in Ray Tune's order: the cartesian product of all grids,
    the grid whose path sorts first varying fastest. Random domains are sampled
    afresh for each grid point (or once, with ``constant_grid_search``), and
    sample_from functions are resolved last. A config without grids yields a
    single variant. ``resolved_vars`` maps path tuples (relative to ``config``)
    to the values chosen for the searched parameters. Generation is lazy.
    """
    space = compile_space(config)
    rng = _as_rng(random_state)
    cache: dict | None = {} if constant_grid_search else None
    for index in range(space.grid_count):
        yield space.variant(index, rng, cache)


def count_grid_points(config: Mapping) -> int:
    """Number of grid points of ``config`` (product of all grid sizes; 1 without grids)."""
    return compile_space(config).grid_count


def deep_merge(base: dict, override: Mapping) -> dict:
    """Merge ``override`` into ``base`` in place, recursing into dicts both have; returns base."""
    for key, value in override.items():
        current = base.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        else:
            base[key] = value
    return base
