"""Plugin registry: resolve plugin names through Python entry points.

Every kind of plugin has one entry-point group (``tunekit.<kind>s``). The entry
point's name is the string users pass (``scheduler="asha"``), its value the class
or factory that implements it. Installed distributions are scanned once per
process (the scan is cached; :func:`clear_cache` forgets it) and a plugin is
imported only when its name is used, so listing plugins and starting tunekit stay
fast however many heavy plugins are installed.

When two distributions register the same name for the same kind, the one found
first wins: distributions are ordered by the position of their location on
``sys.path`` and then by distribution name. :func:`list_plugins` shows all of
them and marks the losers as not ``active``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.metadata costs tens of ms: imported when first needed
    from importlib.metadata import Distribution, EntryPoint

__all__ = [
    "GROUPS",
    "KINDS",
    "MissingPluginError",
    "PluginConflictWarning",
    "PluginInfo",
    "PluginLoadError",
    "SHIPPED_PLUGINS",
    "UnknownPluginError",
    "check_import",
    "clear_cache",
    "create",
    "import_plugin_attribute",
    "list_plugins",
    "load",
    "names",
    "unknown_plugin_error",
]

#: The kinds of plugins, in the order listings show them.
KINDS: tuple[str, ...] = ("searcher", "scheduler", "logger", "callback", "executor", "plugin")

#: Entry-point group of each kind.
GROUPS: dict[str, str] = {kind: f"tunekit.{kind}s" for kind in KINDS}

_KIND_OF_GROUP = {group: kind for kind, group in GROUPS.items()}

#: Plugin distributions that ``tunekit[standard]`` installs.
STANDARD_DISTRIBUTIONS = frozenset({"tunekit-basic-search", "tunekit-fifo", "tunekit-loggers"})

INSTALL_HINT = "install the plugins tunekit ships with `pip install tunekit[all]`."

#: The plugins tunekit's own distributions (the folders under ``plugins/``) register:
#: (kind, name) -> (distribution, the ``tunekit[...]`` extra that installs it). Read when
#: a name is not installed, to say which distribution to install; it must match the
#: distributions' entry points (tests/test_registry.py checks it against their
#: pyproject.toml files). The core's own ``local`` executor is always installed.
SHIPPED_PLUGINS: dict[tuple[str, str], tuple[str, str]] = {
    ("searcher", "random"): ("tunekit-basic-search", "standard"),
    ("searcher", "grid"): ("tunekit-basic-search", "standard"),
    ("searcher", "variant_generator"): ("tunekit-basic-search", "standard"),
    ("searcher", "optuna"): ("tunekit-optuna", "optuna"),
    ("searcher", "hyperopt"): ("tunekit-hyperopt", "hyperopt"),
    ("scheduler", "fifo"): ("tunekit-fifo", "standard"),
    ("scheduler", "asha"): ("tunekit-hyperband", "schedulers"),
    ("scheduler", "async_hyperband"): ("tunekit-hyperband", "schedulers"),
    ("scheduler", "hyperband"): ("tunekit-hyperband", "schedulers"),
    ("scheduler", "hb_bohb"): ("tunekit-hyperband", "schedulers"),
    ("scheduler", "median_stopping_rule"): ("tunekit-hyperband", "schedulers"),
    ("scheduler", "pbt"): ("tunekit-pbt", "schedulers"),
    ("scheduler", "pbt_replay"): ("tunekit-pbt", "schedulers"),
    ("scheduler", "pb2"): ("tunekit-pbt", "schedulers"),
    ("logger", "json"): ("tunekit-loggers", "standard"),
    ("logger", "csv"): ("tunekit-loggers", "standard"),
    ("logger", "tensorboard"): ("tunekit-tensorboard", "tensorboard"),
    ("logger", "mlflow"): ("tunekit-mlflow", "mlflow"),
    ("callback", "mlflow"): ("tunekit-mlflow", "mlflow"),
    ("executor", "ray"): ("tunekit-ray", "ray"),
}


class UnknownPluginError(ValueError):
    """No installed plugin of the requested kind has the requested name."""

    def __init__(self, kind: str, name: str, installed: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.installed = installed
        plural = _plural(kind)
        if installed:
            text = f"Unknown {kind} {name!r}. Installed {plural}: {', '.join(installed)}."
            close = _closest(name, installed)
            if close is not None:
                text += f" Did you mean {close!r}?"
        else:
            text = f"Unknown {kind} {name!r}: no {plural} are installed."
        text += (
            f" Plugin distributions add {plural} through the entry-point group "
            f"{GROUPS[kind]!r}; {INSTALL_HINT}"
        )
        super().__init__(text)


class MissingPluginError(UnknownPluginError, ImportError):
    """The name belongs to a plugin tunekit ships whose distribution is not installed.

    An ``ImportError`` that says which distribution to install; it is also an
    :class:`UnknownPluginError` (a ``ValueError``), so code catching unknown names
    keeps working; ``name`` is the plugin name, as for UnknownPluginError.
    """

    def __init__(self, kind: str, name: str, installed: list[str], distribution: str,
                 extra: str) -> None:
        super().__init__(kind, name, installed)
        self.distribution = distribution
        self.extra = extra
        plural = _plural(kind)
        listed = f"Installed {plural}: {', '.join(installed)}." if installed else (
            f"No {plural} are installed."
        )
        text = (
            f"The {kind} {name!r} is provided by the plugin distribution {distribution!r}, "
            f"which is not installed. Install it with `pip install {distribution}` (or "
            f"`pip install tunekit[{extra}]`). {listed}"
        )
        self.args = (text,)
        self.msg = text  # what ImportError shows; ``name`` stays the plugin name


def unknown_plugin_error(kind: str, name: str, installed: list[str],
                         also: tuple[str, ...] = ()) -> UnknownPluginError:
    """The error for a ``name`` of ``kind`` that no installed distribution registers.

    A name of a plugin tunekit ships (:data:`SHIPPED_PLUGINS`, as ``kind`` or as
    one of the kinds in ``also``) gives a :class:`MissingPluginError` naming the
    distribution to install; any other name an :class:`UnknownPluginError`
    listing the ``installed`` names.
    """
    kind = _check_kind(kind)
    if isinstance(name, str):
        for shipped_kind in (kind, *(_check_kind(k) for k in also)):
            shipped = SHIPPED_PLUGINS.get((shipped_kind, name))
            if shipped is not None:
                distribution, extra = shipped
                return MissingPluginError(kind, name, installed, distribution, extra)
    return UnknownPluginError(kind, name, installed)


class PluginLoadError(ImportError):
    """An installed plugin failed to import; the original exception is chained."""

    def __init__(self, info: PluginInfo, error: BaseException) -> None:
        self.kind = info.kind
        self.plugin_name = info.name
        self.distribution = info.distribution
        self.version = info.version
        self.value = info.value
        self.original = error
        text = (
            f"Could not load {info.kind} {info.name!r} (entry point "
            f"'{info.name} = {info.value}' in group {info.group!r}) from distribution "
            f"{info.distribution} {info.version}: {type(error).__name__}: {error}. "
            f"Fix or reinstall {info.distribution} (`pip install --force-reinstall "
            f"{info.distribution}`), or uninstall it (`pip uninstall {info.distribution}`)."
        )
        super().__init__(text, name=info.value.partition(":")[0].strip())


class PluginConflictWarning(UserWarning):
    """Several distributions register the same plugin name; the first one wins."""


@dataclass(frozen=True)
class PluginInfo:
    """One registered entry point, as :func:`list_plugins` reports it.

    ``loads`` is decided without importing the plugin (the top-level module is
    findable and the distribution's requirements are installed) unless the
    record comes from :func:`check_import` or ``list_plugins(import_plugins=True)``.
    ``problem`` says why it does not load; ``active`` is False for an entry
    shadowed by another distribution registering the same name.
    """

    name: str
    kind: str
    group: str
    distribution: str
    version: str
    value: str
    loads: bool
    problem: str | None
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class _Entry:
    name: str
    kind: str
    entry_point: EntryPoint
    dist: Distribution
    distribution: str
    version: str
    order: tuple[int, str, int]

    def info(self, loads: bool, problem: str | None, active: bool) -> PluginInfo:
        return PluginInfo(
            name=self.name,
            kind=self.kind,
            group=GROUPS[self.kind],
            distribution=self.distribution,
            version=self.version,
            value=self.entry_point.value,
            loads=loads,
            problem=problem,
            active=active,
        )


# kind -> name -> candidates, best first. None until the first scan.
_index: dict[str, dict[str, list[_Entry]]] | None = None
# (kind, name) -> loaded object
_loaded: dict[tuple[str, str], Any] = {}
_warned_conflicts: set[tuple[str, str]] = set()


def clear_cache() -> None:
    """Forget the entry-point scan and the loaded plugins.

    Call after installing or uninstalling distributions in a running process
    (tests do); the next lookup scans again.
    """
    global _index
    _index = None
    _loaded.clear()
    _warned_conflicts.clear()
    _requirement_cache.clear()
    importlib.invalidate_caches()


def _plural(kind: str) -> str:
    return f"{kind}s"


def _closest(name: str, candidates: list[str]) -> str | None:
    import difflib

    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _normalize(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _check_kind(kind: str) -> str:
    if kind in GROUPS:
        return kind
    if isinstance(kind, str):
        if kind in _KIND_OF_GROUP:
            return _KIND_OF_GROUP[kind]
        if kind.endswith("s") and kind[:-1] in GROUPS:
            return kind[:-1]
    raise ValueError(f"Unknown plugin kind {kind!r}; expected one of: {', '.join(KINDS)}.")


def _path_positions() -> dict[str, int]:
    positions: dict[str, int] = {}
    for position, entry in enumerate(sys.path):
        try:
            key = os.path.normcase(os.path.realpath(entry or os.getcwd()))
        except (OSError, ValueError):
            continue
        positions.setdefault(key, position)
    return positions


def _location_position(dist: Distribution, positions: dict[str, int]) -> int:
    try:
        location = os.path.normcase(os.path.realpath(str(dist.locate_file(""))))
    except Exception:
        return len(positions) + 1
    return positions.get(location, len(positions) + 1)


def _entry_points_text(dist: Distribution) -> str | None:
    """``dist``'s entry_points.txt. Every installed distribution is read at each scan, so a
    distribution in a directory (importlib.metadata's ``PathDistribution``) is read with
    plain file I/O, a few times faster than through ``read_text``'s pathlib objects."""
    from pathlib import PurePath  # imported already by importlib.metadata

    path = getattr(dist, "_path", None)
    if isinstance(path, PurePath):  # a directory (a zip member is a zipfile.Path)
        try:
            with open(os.path.join(os.fspath(path), "entry_points.txt"), encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError:
            pass
    return dist.read_text("entry_points.txt")


def _scan() -> dict[str, dict[str, list[_Entry]]]:
    import importlib.metadata

    index: dict[str, dict[str, list[_Entry]]] = {kind: {} for kind in KINDS}
    positions = _path_positions()
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        try:
            text = _entry_points_text(dist)
        except Exception:
            continue
        if not text or "tunekit." not in text:
            continue
        try:
            metadata = dist.metadata  # parsed once for both (dist.version parses it again)
            dist_name = metadata["Name"] or "?"
            version = metadata["Version"] or "?"
        except Exception:
            continue
        normalized = _normalize(dist_name)
        if normalized in seen:
            # The same distribution on a later sys.path entry: shadowed, as for imports.
            continue
        seen.add(normalized)
        position = _location_position(dist, positions)
        try:
            entry_points = list(dist.entry_points)
        except Exception:
            continue
        for number, entry_point in enumerate(entry_points):
            kind = _KIND_OF_GROUP.get(entry_point.group)
            if kind is None:
                continue
            entry = _Entry(
                name=entry_point.name,
                kind=kind,
                entry_point=entry_point,
                dist=dist,
                distribution=dist_name,
                version=version,
                order=(position, normalized, number),
            )
            index[kind].setdefault(entry_point.name, []).append(entry)
    for by_name in index.values():
        for candidates in by_name.values():
            candidates.sort(key=lambda e: e.order)
    return index


def _get_index() -> dict[str, dict[str, list[_Entry]]]:
    global _index
    index = _index
    if index is None:
        index = _index = _scan()
    return index


def names(kind: str) -> list[str]:
    """The installed plugin names of ``kind``, sorted. Imports no plugin."""
    return sorted(_get_index()[_check_kind(kind)])


def _resolve(kind: str, name: str) -> _Entry:
    if not isinstance(name, str):
        raise TypeError(f"A {kind} name must be a string, got {type(name).__name__}: {name!r}.")
    by_name = _get_index()[kind]
    candidates = by_name.get(name)
    if not candidates:
        raise unknown_plugin_error(kind, name, sorted(by_name))
    first = candidates[0]
    others = [c for c in candidates[1:] if c.distribution != first.distribution]
    if others and (kind, name) not in _warned_conflicts:
        _warned_conflicts.add((kind, name))
        providers = ", ".join(f"{c.distribution} {c.version}" for c in candidates)
        warnings.warn(
            f"The {kind} name {name!r} is registered by several distributions ({providers}); "
            f"using the one from {first.distribution}. Uninstall the others to silence this.",
            PluginConflictWarning,
            stacklevel=3,
        )
    return first


def _import_entry(entry: _Entry) -> Any:
    try:
        return entry.entry_point.load()
    except Exception as error:
        raise PluginLoadError(entry.info(False, _describe(error), True), error) from error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def load(kind: str, name: str) -> Any:
    """Import and return the class or factory registered as ``name`` for ``kind``.

    Raises :class:`UnknownPluginError` when no such name is installed (its
    subclass :class:`MissingPluginError`, also an ImportError, when the name is one
    of tunekit's own plugins whose distribution is missing) and
    :class:`PluginLoadError` when the plugin fails to import. Loaded plugins are
    cached for the process.
    """
    kind = _check_kind(kind)
    key = (kind, name)
    try:
        return _loaded[key]
    except (KeyError, TypeError):
        pass
    obj = _import_entry(_resolve(kind, name))
    _loaded[key] = obj
    return obj


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate the plugin registered as ``name`` for ``kind`` with ``kwargs``."""
    factory = load(kind, name)
    if not callable(factory):
        raise TypeError(
            f"The {kind} {name!r} resolves to {factory!r}, which is not a class or factory; "
            f"its entry point should name a callable returning a {kind}."
        )
    return factory(**kwargs)


_requirement_cache: dict[str, str | None] = {}


def _installed_version(requirement_name: str) -> str | None:
    import importlib.metadata

    key = _normalize(requirement_name)
    if key not in _requirement_cache:
        try:
            _requirement_cache[key] = importlib.metadata.version(requirement_name)
        except importlib.metadata.PackageNotFoundError:
            _requirement_cache[key] = None
        except Exception:
            _requirement_cache[key] = "?"
    return _requirement_cache[key]


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)")


def _missing_requirements(dist: Distribution) -> list[str]:
    """Declared (non-extra) requirements of ``dist`` that are not installed."""
    try:
        requirements = dist.requires or []
    except Exception:
        return []
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        marker = marker.strip()
        if marker:
            if "extra" in marker:
                continue
            applies = _marker_applies(marker)
            if applies is False:
                continue
        match = _REQUIREMENT.match(spec)
        if not match:
            continue
        req_name, specifier = match.group(1), match.group(3).strip().strip("()").strip()
        version = _installed_version(req_name)
        if version is None:
            missing.append(f"{req_name} is not installed")
        elif specifier and version != "?" and not _version_satisfies(version, specifier):
            missing.append(f"{req_name}{specifier} is required but {version} is installed")
    return missing


def _marker_applies(marker: str) -> bool | None:
    try:
        from packaging.markers import Marker
    except ImportError:  # cannot tell without packaging: do not flag
        return None
    try:
        return bool(Marker(marker).evaluate())
    except Exception:
        return None


def _version_satisfies(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return True
    try:
        return SpecifierSet(specifier).contains(version, prereleases=True)
    except Exception:
        return True


def _static_problem(entry: _Entry) -> str | None:
    module = entry.entry_point.value.partition(":")[0].strip()
    top = module.split(".")[0]
    try:
        found = top in sys.modules or importlib.util.find_spec(top) is not None
    except Exception as error:
        return f"cannot look up module {top!r}: {_describe(error)}"
    if not found:
        return f"module {top!r} not found (is {entry.distribution} installed correctly?)"
    missing = _missing_requirements(entry.dist)
    if missing:
        return f"{entry.distribution} requirement(s) unmet: {'; '.join(missing)}"
    return None


def _import_problem(entry: _Entry) -> str | None:
    try:
        entry.entry_point.load()
    except Exception as error:
        return _describe(error)
    return None


def list_plugins(kind: str | None = None, *, import_plugins: bool = False) -> list[PluginInfo]:
    """Every registered entry point (of ``kind``, or of all kinds).

    Without ``import_plugins`` nothing is imported: ``loads`` is decided from
    metadata and module lookup only. With it, each plugin is imported and
    ``loads`` reports whether that worked. A broken plugin never raises here.
    """
    kinds = KINDS if kind is None else (_check_kind(kind),)
    index = _get_index()
    records = []
    for k in kinds:
        for name in sorted(index[k]):
            for position, entry in enumerate(index[k][name]):
                problem = _import_problem(entry) if import_plugins else _static_problem(entry)
                records.append(entry.info(problem is None, problem, position == 0))
    return records


def check_import(kind: str, name: str) -> PluginInfo:
    """Import the plugin ``name`` of ``kind`` and report whether that worked.

    Unlike :func:`load` it does not raise for a broken plugin; the record's
    ``problem`` holds the exception. Unknown names raise :class:`UnknownPluginError`.
    """
    kind = _check_kind(kind)
    entry = _resolve(kind, name)
    problem = _import_problem(entry)
    return entry.info(problem is None, problem, True)


def _extra_of(distribution: str) -> str:
    """The ``tunekit[...]`` extra that installs one of tunekit's plugin distributions."""
    for shipped, extra in SHIPPED_PLUGINS.values():
        if shipped == distribution:
            return extra
    return "standard" if distribution in STANDARD_DISTRIBUTIONS else "all"


def import_plugin_attribute(module: str, attribute: str, distribution: str, facade: str) -> Any:
    """Import ``attribute`` from a plugin ``module`` for a public facade's lazy names.

    When the plugin distribution is missing, the ImportError says which
    distribution provides ``facade.attribute`` and how to install it.
    """
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != module.split(".")[0]:
            raise
        extra = _extra_of(distribution)
        raise ImportError(
            f"{facade}.{attribute} is provided by the plugin distribution {distribution!r}, "
            f"which is not installed. Install it with `pip install {distribution}` "
            f"(or `pip install tunekit[{extra}]`).",
            name=module,
        ) from error
    return getattr(imported, attribute)
