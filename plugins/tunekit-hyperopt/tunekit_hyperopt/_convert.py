"""Convert a tunekit search space into a Hyperopt space.

The config is compiled into a tree of nodes mirroring its structure:

* :class:`_Param`: one searched parameter, a labelled Hyperopt distribution
  named after its path in the config (``"model/lr"``, ``"layers/0"``);
* :class:`_Choice`: a ``choice()``; Hyperopt picks the category's index
  (``hp.choice``), and parameters inside a category that contains search
  domains (a conditional space) are labelled ``"<choice>/<index>/<sub path>"``
  and are only active when that category is chosen;
* constants, copied into every config.

``CompiledSpace.expr`` is the Hyperopt space TPE samples from: a flat dict of
``label -> hp node``, with the parameters of conditional categories nested in
the options of their ``hp.choice``. A suggestion's ``vals`` (``{label: value}``,
choice labels giving the index) are turned into the config by
``CompiledSpace.build``; ``CompiledSpace.encode`` turns a config (a
``points_to_evaluate`` entry) into ``vals``.

The tunekit bound rules carry over: ``uniform``/``loguniform`` floats lie in
``[lower, upper]``, ``randint``/``lograndint`` exclude ``upper``, and quantized
domains are the multiples of ``q`` inside ``[lower, upper]``, both included,
each equally likely under ``quniform``/``qrandint`` (the Hyperopt bounds are
widened by ``q/2`` so that rounding does not halve the end points).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from hyperopt import hp

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

__all__ = ["compile_space", "CompiledSpace", "SpaceError", "label_of"]

_ATOMS = (type(None), bool, int, float, str, bytes, complex)


class SpaceError(ValueError):
    """A search space Hyperopt cannot express (names the parameter path)."""


def label_of(path: tuple) -> str:
    """The Hyperopt label of a config path: its keys joined with ``/``."""
    return "/".join(str(p) for p in path)


def _where(path: tuple) -> str:
    return label_of(path) or "<root>"


def _decimals(q: float) -> int | None:
    text = repr(float(q))
    mantissa, _, exp = text.partition("e")
    decimals = len(mantissa.partition(".")[2].rstrip("0")) - (int(exp) if exp else 0)
    return max(decimals, 0) if decimals <= 15 else None


def _is_atomic(value: Any) -> bool:
    if type(value) in _ATOMS:
        return True
    if type(value) is tuple:
        return all(_is_atomic(v) for v in value)
    return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - exotic __eq__
        return False


# --------------------------------------------------------------------------- #
# Nodes
# --------------------------------------------------------------------------- #


class _Const:
    __slots__ = ("value", "mutable")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.mutable = not _is_atomic(value)

    def build(self, vals: Mapping) -> Any:
        return copy.deepcopy(self.value) if self.mutable else self.value

    def matches(self, value: Any) -> bool:
        return _same(value, self.value)

    def encode(self, value: Any, out: dict, where: str) -> None:
        return None

    def exprs(self) -> dict:
        return {}


class _Param:
    """One searched parameter: a labelled Hyperopt node and the decoding of its values."""

    __slots__ = ("label", "node", "kind", "lower", "upper", "decimals")

    def __init__(
        self,
        label: str,
        node: Any,
        kind: str,
        lower: float | None = None,
        upper: float | None = None,
        q: float | None = None,
    ) -> None:
        self.label = label
        self.node = node
        self.kind = kind  # "float" or "int"
        self.lower = lower
        self.upper = upper
        self.decimals = _decimals(q) if q is not None else None

    def build(self, vals: Mapping) -> Any:
        return self.decode(vals[self.label])

    def decode(self, value: Any) -> Any:
        if self.kind == "int":
            value = int(round(float(value)))
        else:
            value = float(value)
            if self.decimals is not None:
                value = round(value, self.decimals)
        if self.lower is not None and value < self.lower:
            value = type(value)(self.lower)
        if self.upper is not None and value > self.upper:
            value = type(value)(self.upper)
        return value

    def matches(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def encode(self, value: Any, out: dict, where: str) -> None:
        if not self.matches(value):
            raise ValueError(f"{where}: '{self.label}' must be a number, got {value!r}.")
        out[self.label] = value

    def exprs(self) -> dict:
        return {self.label: self.node}


class _Choice:
    """A choice(): Hyperopt picks the index of a category (hp.choice)."""

    __slots__ = ("label", "options")

    def __init__(self, label: str, options: list) -> None:
        self.label = label
        self.options = options

    def build(self, vals: Mapping) -> Any:
        return self.options[int(vals[self.label])].build(vals)

    def matches(self, value: Any) -> bool:
        return any(option.matches(value) for option in self.options)

    def encode(self, value: Any, out: dict, where: str) -> None:
        for index, option in enumerate(self.options):
            if option.matches(value):
                out[self.label] = index
                option.encode(value, out, where)
                return
        raise ValueError(f"{where}: {value!r} is not one of the categories of '{self.label}'.")

    def exprs(self) -> dict:
        # Each option contributes its own parameters (active only when it is chosen).
        return {self.label: hp.choice(self.label, [o.exprs() or i for i, o in enumerate(self.options)])}


class _Dict:
    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self.items = items

    def build(self, vals: Mapping) -> dict:
        return {key: node.build(vals) for key, node in self.items}

    def matches(self, value: Any) -> bool:
        if not isinstance(value, Mapping):
            return False
        keys = {key for key, _ in self.items}
        if set(value) - keys:
            return False
        return all(node.matches(value[key]) for key, node in self.items if key in value)

    def encode(self, value: Any, out: dict, where: str) -> None:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a dict, got {value!r}.")
        for key, node in self.items:
            if key in value:
                node.encode(value[key], out, where)

    def exprs(self) -> dict:
        out: dict = {}
        for _, node in self.items:
            out.update(node.exprs())
        return out


class _Seq:
    __slots__ = ("children", "is_tuple")

    def __init__(self, children: list, is_tuple: bool) -> None:
        self.children = children
        self.is_tuple = is_tuple

    def build(self, vals: Mapping) -> Any:
        values = [child.build(vals) for child in self.children]
        return tuple(values) if self.is_tuple else values

    def matches(self, value: Any) -> bool:
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(self.children)
            and all(child.matches(v) for child, v in zip(self.children, value))
        )

    def encode(self, value: Any, out: dict, where: str) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != len(self.children):
            raise ValueError(
                f"{where}: expected a sequence of {len(self.children)} values, got {value!r}."
            )
        for child, v in zip(self.children, value):
            child.encode(v, out, where)

    def exprs(self) -> dict:
        out: dict = {}
        for child in self.children:
            out.update(child.exprs())
        return out


# --------------------------------------------------------------------------- #
# Compilation
# --------------------------------------------------------------------------- #


class CompiledSpace:
    """A tunekit config compiled for Hyperopt (see the module docstring)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.expr: dict = root.exprs()

    @property
    def empty(self) -> bool:
        """True if the config has no searched parameter."""
        return not self.expr

    def build(self, vals: Mapping) -> dict:
        """The config for Hyperopt's ``vals`` (``{label: value}``)."""
        return self.root.build(vals)

    def encode(self, point: Mapping, where: str) -> dict:
        """Hyperopt ``vals`` of the complete config ``point``; ValueError if a value is missing."""
        vals: dict = {}
        self.root.encode(point, vals, where)
        try:
            self.root.build(vals)
        except KeyError as exc:
            raise ValueError(
                f"{where} has no value for the parameter '{exc.args[0]}'. Hyperopt evaluates "
                f"points as given: every searched parameter needs a value."
            ) from None
        return vals


def compile_space(config: Mapping) -> CompiledSpace:
    """Compile a tunekit config for Hyperopt; ValueError naming the path of what it lacks."""
    if not isinstance(config, Mapping):
        raise SpaceError(f"A search space must be a dict, got {type(config).__name__}.")
    return CompiledSpace(_compile(dict(config), (), ()))


def _compile(value: Any, path: tuple, name_path: tuple) -> Any:
    if isinstance(value, Domain):
        return _domain(value, path, name_path)
    if isinstance(value, dict):
        if len(value) == 1 and "grid_search" in value:
            raise SpaceError(
                f"Parameter '{_where(path)}' is a grid_search, which Hyperopt cannot express. "
                f"Use tunekit.choice([...]) to let Hyperopt pick among the values, or run a "
                f"grid with the default search algorithm (search_alg=None)."
            )
        if len(value) == 1 and isinstance(value.get("eval"), str):
            raise SpaceError(
                f"Parameter '{_where(path)}' is an {{'eval': ...}} (sample_from) expression, "
                f"which Hyperopt cannot express. Replace it with a tunekit domain or compute "
                f"the value inside the trainable."
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
    label = label_of(name_path)
    if domain.is_function():
        raise SpaceError(
            f"Parameter '{where}' is a sample_from function, which Hyperopt cannot express. "
            f"Replace it with a tunekit domain, or compute the value inside the trainable."
        )
    if domain.is_grid():
        raise SpaceError(
            f"Parameter '{where}' is a grid_search, which Hyperopt cannot express. Use "
            f"tunekit.choice([...]) instead, or the default search algorithm for grids."
        )
    sampler = domain.get_sampler()
    q = None
    inner = sampler
    if isinstance(sampler, Quantized):
        q = sampler.q
        inner = sampler.get_sampler()
    if isinstance(domain, Float):
        lower, upper = domain.lower, domain.upper
        if isinstance(inner, Normal):
            if q is None:
                return _Param(label, hp.normal(label, inner.mean, inner.sd), "float")
            return _Param(label, hp.qnormal(label, inner.mean, inner.sd, q), "float", q=q)
        if q is None:
            if isinstance(inner, LogUniform):
                node = hp.loguniform(label, math.log(lower), math.log(upper))
                return _Param(label, node, "float", lower, upper)
            if isinstance(inner, Uniform):
                return _Param(label, hp.uniform(label, lower, upper), "float", lower, upper)
        else:
            lo = math.ceil(lower / q - 1e-9)
            hi = math.floor(upper / q + 1e-9)
            low_v, high_v = lo * q, hi * q
            if isinstance(inner, LogUniform):
                node = hp.qloguniform(
                    label, math.log(max(low_v, lower)), math.log(min(high_v, upper)), q
                )
            elif isinstance(inner, Uniform):
                node = hp.quniform(label, low_v - q / 2, high_v + q / 2, q)
            else:
                node = None
            if node is not None:
                return _Param(label, node, "float", min(lower, low_v), max(upper, high_v), q=q)
    elif isinstance(domain, Integer):
        lower, upper = domain.lower, domain.upper
        if q is None:
            if isinstance(inner, LogUniform):
                # round() of a log-uniform value in [lower - 0.5, upper - 0.5): lower..upper-1
                node = hp.qloguniform(label, math.log(lower - 0.5), math.log(upper - 0.5), 1)
                return _Param(label, node, "int", lower, upper - 1)
            if isinstance(inner, Uniform):
                node = hp.quniform(label, lower - 0.5, upper - 0.5, 1)
                return _Param(label, node, "int", lower, upper - 1)
        else:
            q = int(q)
            lo, hi = -(-lower // q) * q, (upper // q) * q  # multiples of q in [lower, upper]
            if isinstance(inner, LogUniform):
                node = hp.qloguniform(label, math.log(lower), math.log(upper), q)
                return _Param(label, node, "int", lo, hi)
            if isinstance(inner, Uniform):
                node = hp.quniform(label, lo - q / 2, hi + q / 2, q)
                return _Param(label, node, "int", lo, hi)
    elif isinstance(domain, Categorical):
        options = [_compile(c, path, name_path + (i,)) for i, c in enumerate(domain.categories)]
        return _Choice(label, options)
    raise SpaceError(
        f"Parameter '{where}' ({domain!r}) cannot be expressed as a Hyperopt distribution."
    )
