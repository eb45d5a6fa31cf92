"""Convert a tunekit search space into Optuna distributions.

A tunekit config is compiled into a small tree of nodes that mirrors the
config's structure:

* a :class:`_Param` stands for one searched parameter (a ``Float``, ``Integer``
  or ``Categorical`` domain) with its Optuna distribution, named after its path
  in the config (``"model/lr"``, ``"layers/0"``);
* a :class:`_Choice` is a ``choice()`` whose categories are not all plain
  values: Optuna picks the category's *index* and, for categories that contain
  search domains themselves (conditional spaces), the parameters inside the
  chosen category are named ``"<choice>/<index>/<sub path>"``;
* constants are kept and copied into every config.

``node.build(get)`` builds a config, asking ``get(name, distribution)`` for
each parameter it meets (a lookup in ``trial.params`` after
``study.ask(fixed_distributions)``, or a ``trial.suggest_*`` call for
conditional spaces). ``node.encode(value, ...)`` does the reverse for
``points_to_evaluate``/``add_evaluated_point``: it turns a config into
Optuna's ``{name: value}`` parameters.

The tunekit bound rules carry over exactly: ``uniform``/``loguniform`` floats
sample ``[lower, upper)``, ``randint``/``lograndint`` exclude ``upper``, and
quantized domains (``quniform``, ``qrandint``) are the multiples of ``q``
inside ``[lower, upper]``, both bounds included.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import optuna.distributions as od

from tunekit_core.space import (
    Categorical,
    Domain,
    Float,
    Integer,
    LogUniform,
    Normal,
    Quantized,
    Uniform,
)

__all__ = ["compile_space", "SpaceError", "param_name"]

# The values Optuna's CategoricalDistribution stores natively.
_PLAIN = (type(None), bool, int, float, str)
_ATOMS = (type(None), bool, int, float, str, bytes, complex)

Getter = Callable[[str, od.BaseDistribution], Any]


class SpaceError(ValueError):
    """A search space Optuna cannot express (names the parameter path)."""


def param_name(path: tuple) -> str:
    """The Optuna parameter name of a config path: its keys joined with ``/``."""
    return "/".join(str(p) for p in path)


def _where(path: tuple) -> str:
    return param_name(path) or "<root>"


def _decimals(q: float) -> int | None:
    text = repr(float(q))
    mantissa, _, exp = text.partition("e")
    decimals = len(mantissa.partition(".")[2].rstrip("0")) - (int(exp) if exp else 0)
    return max(decimals, 0) if decimals <= 15 else None


# --------------------------------------------------------------------------- #
# Nodes
# --------------------------------------------------------------------------- #


class _Const:
    __slots__ = ("value", "mutable")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.mutable = not _is_atomic(value)

    def build(self, get: Getter) -> Any:
        return copy.deepcopy(self.value) if self.mutable else self.value

    def matches(self, value: Any) -> bool:
        try:
            return bool(value == self.value)
        except Exception:  # noqa: BLE001 - exotic __eq__
            return False

    def encode(self, value: Any, out: dict, dists: dict, where: str) -> None:
        return None

    def params(self) -> list[_Param | _Choice]:
        return []


class _Param:
    """One searched parameter: an Optuna distribution plus the decoding of its values."""

    __slots__ = ("name", "dist", "kind", "q", "decimals", "lower", "upper")

    def __init__(
        self,
        name: str,
        dist: od.BaseDistribution,
        kind: str,
        q: float | None = None,
        lower: float | None = None,
        upper: float | None = None,
    ) -> None:
        self.name = name
        self.dist = dist
        self.kind = kind  # "float", "qfloat", "int", "cat"
        self.q = q
        self.decimals = _decimals(q) if q is not None else None
        self.lower = lower
        self.upper = upper

    def build(self, get: Getter) -> Any:
        return self.decode(get(self.name, self.dist))

    def decode(self, value: Any) -> Any:
        kind = self.kind
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "qfloat":
            # Optuna returns low + k * step, which may carry float noise (0.30000000000000004).
            value = float(value)
            if self.decimals is not None:
                value = round(value, self.decimals)
            return min(max(value, self.lower), self.upper)
        return value

    def matches(self, value: Any) -> bool:
        return True

    def encode(self, value: Any, out: dict, dists: dict, where: str) -> None:
        if self.kind == "cat":
            if not any(_same(value, c) for c in self.dist.choices):
                raise ValueError(
                    f"{where}: {value!r} is not one of the categories "
                    f"{list(self.dist.choices)!r} of '{self.name}'."
                )
            value = next(c for c in self.dist.choices if _same(value, c))
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise ValueError(f"{where}: '{self.name}' must be an integer, got {value!r}.")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: '{self.name}' must be a number, got {value!r}.")
            value = float(value)
        out[self.name] = value
        dists[self.name] = self.dist

    def params(self) -> list[_Param | _Choice]:
        return [self]


class _Choice:
    """A choice() over categories that are not all plain values: Optuna picks an index."""

    __slots__ = ("name", "dist", "options")

    def __init__(self, name: str, options: list) -> None:
        self.name = name
        self.options = options
        self.dist = od.CategoricalDistribution(list(range(len(options))))

    def build(self, get: Getter) -> Any:
        return self.options[int(get(self.name, self.dist))].build(get)

    def matches(self, value: Any) -> bool:
        return any(option.matches(value) for option in self.options)

    def encode(self, value: Any, out: dict, dists: dict, where: str) -> None:
        for index, option in enumerate(self.options):
            if option.matches(value):
                out[self.name] = index
                dists[self.name] = self.dist
                option.encode(value, out, dists, where)
                return
        raise ValueError(f"{where}: {value!r} does not match any category of '{self.name}'.")

    def params(self) -> list[_Param | _Choice]:
        out: list[_Param | _Choice] = [self]
        for option in self.options:
            out.extend(option.params())
        return out


class _Dict:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self.items = items

    def build(self, get: Getter) -> dict:
        return {key: node.build(get) for key, node in self.items}

    def matches(self, value: Any) -> bool:
        if not isinstance(value, Mapping):
            return False
        keys = {key for key, _ in self.items}
        if set(value) - keys:
            return False
        return all(node.matches(value[key]) for key, node in self.items if key in value)

    def encode(self, value: Any, out: dict, dists: dict, where: str) -> None:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a dict, got {value!r}.")
        for key, node in self.items:
            if key in value:
                node.encode(value[key], out, dists, where)

    def params(self) -> list[_Param | _Choice]:
        out: list[_Param | _Choice] = []
        for _, node in self.items:
            out.extend(node.params())
        return out


class _Seq:
    __slots__ = ("children", "is_tuple")

    def __init__(self, children: list, is_tuple: bool) -> None:
        self.children = children
        self.is_tuple = is_tuple

    def build(self, get: Getter) -> Any:
        values = [child.build(get) for child in self.children]
        return tuple(values) if self.is_tuple else values

    def matches(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(self.children)
            and all(child.matches(v) for child, v in zip(self.children, value))
        )

    def encode(self, value: Any, out: dict, dists: dict, where: str) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != len(self.children):
            raise ValueError(
                f"{where}: expected a sequence of {len(self.children)} values, got {value!r}."
            )
        for child, v in zip(self.children, value):
            child.encode(v, out, dists, where)

    def params(self) -> list[_Param | _Choice]:
        out: list[_Param | _Choice] = []
        for child in self.children:
            out.extend(child.params())
        return out


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 (and False from 0)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _is_atomic(value: Any) -> bool:
    if type(value) in _ATOMS:
        return True
    if type(value) is tuple:
        return all(_is_atomic(v) for v in value)
    return False


# --------------------------------------------------------------------------- #
# Compilation
# --------------------------------------------------------------------------- #


class CompiledSpace:
    """A tunekit config compiled for Optuna.

    Attributes:
        root: the node tree (``root.build(get)`` builds a config).
        distributions: ``{name: distribution}`` of every parameter; for a static
            space (no conditional choice) this is what ``study.ask`` receives.
        conditional: True if some choice() category contains search domains.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        params = root.params()
        self.distributions: dict[str, od.BaseDistribution] = {p.name: p.dist for p in params}
        self.conditional = any(
            isinstance(p, _Choice) and any(o.params() for o in p.options) for p in params
        )

    def build(self, get: Getter) -> dict:
        """Build a config, asking ``get(name, distribution)`` for each active parameter."""
        return self.root.build(get)

    def encode(self, point: Mapping, where: str) -> tuple[dict, dict]:
        """Optuna ``(params, distributions)`` of the config ``point`` (partial points allowed)."""
        params: dict = {}
        dists: dict = {}
        self.root.encode(_unflatten(point, self.root), params, dists, where)
        return params, dists


def _unflatten(point: Mapping, root: Any) -> Mapping:
    """Accept ``{"a/b": 1}`` as well as ``{"a": {"b": 1}}`` in points."""
    if not isinstance(root, _Dict) or not any(isinstance(k, str) and "/" in k for k in point):
        return point
    top = {key for key, _ in root.items}
    out: dict = {}
    for key, value in point.items():
        if isinstance(key, str) and "/" in key and key not in top:
            parts = key.split("/")
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        else:
            out[key] = value
    return out


def compile_space(config: Mapping) -> CompiledSpace:
    """Compile a tunekit config for Optuna; ValueError naming the path of what Optuna lacks."""
    if not isinstance(config, Mapping):
        raise SpaceError(f"A search space must be a dict, got {type(config).__name__}.")
    return CompiledSpace(_compile(dict(config), (), ()))


def _compile(value: Any, path: tuple, name_path: tuple) -> Any:
    if isinstance(value, Domain):
        return _domain(value, path, name_path)
    if isinstance(value, dict):
        if len(value) == 1 and "grid_search" in value:
            raise SpaceError(
                f"Parameter '{_where(path)}' is a grid_search, which Optuna cannot express. "
                f"Use tunekit.choice([...]) to let Optuna pick among the values, or run a grid "
                f"with the default search algorithm (search_alg=None)."
            )
        if len(value) == 1 and isinstance(value.get("eval"), str):
            raise SpaceError(
                f"Parameter '{_where(path)}' is an {{'eval': ...}} (sample_from) expression, "
                f"which Optuna cannot express. Replace it with a tunekit domain (uniform, "
                f"randint, choice, ...) or compute the value inside the trainable."
            )
        items = [(k, _compile(v, path + (k,), name_path + (k,))) for k, v in value.items()]
        if all(isinstance(n, _Const) for _, n in items):
            return _Const(value)
        return _Dict(items)
    if type(value) in (list, tuple):
        children = [_compile(v, path + (i,), name_path + (i,)) for i, v in enumerate(value)]
        if all(isinstance(n, _Const) for n in children):
            return _Const(value)
        return _Seq(children, type(value) is tuple)
    return _Const(value)


def _domain(domain: Domain, path: tuple, name_path: tuple) -> Any:
    where = _where(path)
    name = param_name(name_path)
    if domain.is_function():
        raise SpaceError(
            f"Parameter '{where}' is a sample_from function, which Optuna cannot express. "
            f"Replace it with a tunekit domain, or use a define-by-run function as "
            f"OptunaSearch(space=...) to compute dependent values."
        )
    if domain.is_grid():
        raise SpaceError(
            f"Parameter '{where}' is a grid_search, which Optuna cannot express. Use "
            f"tunekit.choice([...]) instead, or the default search algorithm for grids."
        )
    sampler = domain.get_sampler()
    q = None
    inner = sampler
    if isinstance(sampler, Quantized):
        q = sampler.q
        inner = sampler.get_sampler()
    if isinstance(domain, Float):
        if isinstance(inner, Normal):
            raise SpaceError(
                f"Parameter '{where}' samples from a normal distribution (randn/qrandn), which "
                f"Optuna cannot express. Use uniform(...) or loguniform(...) with bounds."
            )
        lower, upper = domain.lower, domain.upper
        if isinstance(inner, LogUniform):
            if q is not None:
                raise SpaceError(
                    f"Parameter '{where}' is qloguniform, but Optuna cannot combine log "
                    f"sampling with a step. Use loguniform(...) (no step) or quniform(...)."
                )
            return _Param(name, od.FloatDistribution(lower, upper, log=True), "float")
        if isinstance(inner, Uniform):
            if q is None:
                return _Param(name, od.FloatDistribution(lower, upper), "float")
            lo = math.ceil(lower / q - 1e-9)
            hi = math.floor(upper / q + 1e-9)
            low_v, high_v = _round(lo * q, q), _round(hi * q, q)
            return _Param(
                name,
                od.FloatDistribution(low_v, high_v, step=q),
                "qfloat",
                q=q,
                lower=min(lower, low_v),
                upper=max(upper, high_v),
            )
    elif isinstance(domain, Integer):
        lower, upper = domain.lower, domain.upper
        if isinstance(inner, LogUniform):
            if q is not None and q != 1:
                raise SpaceError(
                    f"Parameter '{where}' is qlograndint with q={q}, but Optuna cannot combine "
                    f"log sampling with a step. Use lograndint(...) or qrandint(...)."
                )
            # lograndint excludes `upper`; qlograndint(q=1) includes it.
            high = upper if q is not None else upper - 1
            return _Param(name, od.IntDistribution(lower, high, log=True), "int")
        if isinstance(inner, Uniform):
            if q is None:
                return _Param(name, od.IntDistribution(lower, upper - 1), "int")
            q = int(q)
            lo, hi = -(-lower // q) * q, (upper // q) * q  # multiples of q in [lower, upper]
            return _Param(name, od.IntDistribution(lo, hi, step=q), "int")
    elif isinstance(domain, Categorical):
        categories = domain.categories
        if all(type(c) in _PLAIN for c in categories) and _distinct(categories):
            return _Param(name, od.CategoricalDistribution(list(categories)), "cat")
        options = [
            _compile(c, path, name_path + (i,)) for i, c in enumerate(categories)
        ]
        return _Choice(name, options)
    raise SpaceError(
        f"Parameter '{where}' ({domain!r}) cannot be expressed as an Optuna distribution."
    )


def _round(value: float, q: float) -> float:
    decimals = _decimals(q)
    return round(value, decimals) if decimals is not None else value


def _distinct(categories: list) -> bool:
    for i, a in enumerate(categories):
        for b in categories[i + 1 :]:
            if _same(a, b):
                return False
    return True
