"""The plugin manager the run loop calls hooks through.

:func:`make_plugin_manager` builds a pluggy ``PluginManager`` with tunekit's
hookspecs, the hook modules registered under the ``tunekit.plugins`` entry-point
group and the run's callbacks. The run loop then calls, for example,
``pm.hook.tunekit_on_trial_result(trial=t, result=r, iteration=i, trials=ts)``.

Call order follows Ray Tune: callbacks in the order they were passed, then the
``tunekit.plugins`` modules (pluggy's ``tryfirst``/``trylast`` still apply).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from tunekit_core import hookspecs, registry
from tunekit_core.callback import Callback
from tunekit_core.env import env_flag

__all__ = ["AUTOLOAD_ENV", "CallbackHooks", "TunekitPluginManager", "make_plugin_manager"]

logger = logging.getLogger(__name__)

#: Set this environment variable to a non-empty value other than "0" to skip
#: the modules registered under ``tunekit.plugins``.
AUTOLOAD_ENV = "TUNEKIT_DISABLE_PLUGIN_AUTOLOAD"

_PLAIN_IMPL: dict[str, Any] = {
    "wrapper": False,
    "hookwrapper": False,
    "optionalhook": False,
    "tryfirst": False,
    "trylast": False,
    "specname": None,
}


class CallbackHooks:
    """The hook implementations of one :class:`Callback`, as a pluggy plugin.

    Holds, as instance attributes named after the hooks, the callback's bound
    methods (or thin adapters) that implement them; see
    ``Callback._tunekit_hookimpls``.
    """

    def __init__(
        self,
        callback: Callback,
        impls: dict[str, Callable[..., Any]],
        opts: dict[str, dict[str, Any]],
    ) -> None:
        self.callback = callback
        self._tunekit_opts = opts
        for name, impl in impls.items():
            setattr(self, name, impl)

    def __repr__(self) -> str:
        return f"<CallbackHooks of {self.callback!r}>"


class TunekitPluginManager(pluggy.PluginManager):
    """A pluggy ``PluginManager`` for project ``"tunekit"`` with its hookspecs added."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if type(plugin) is CallbackHooks:
            opts = plugin._tunekit_opts.get(name)
            return dict(opts) if opts is not None else None
        return super().parse_hookimpl_opts(plugin, name)

    def hookimpl_names(self, obj: Any) -> list[str]:
        """Names of the attributes of ``obj`` marked with ``tunekit.hookimpl``."""
        found = []
        for name in dir(obj):
            if not name.startswith("tunekit_"):
                continue
            try:
                opts = pluggy.PluginManager.parse_hookimpl_opts(self, obj, name)
            except Exception:
                opts = None
            if opts is not None:
                found.append(name)
        return found

    def register_callback(self, callback: Any, name: str | None = None) -> str | None:
        """Register a :class:`Callback` or an object with ``@hookimpl`` methods."""
        if isinstance(callback, Callback):
            impls = callback._tunekit_hookimpls()
            opts = {hook: dict(_PLAIN_IMPL) for hook in impls}
            # Explicit @hookimpl methods on a Callback win over its Ray-style methods.
            for hook in self.hookimpl_names(callback):
                impls[hook] = getattr(callback, hook)
                opts[hook] = dict(pluggy.PluginManager.parse_hookimpl_opts(self, callback, hook))
            return self.register(CallbackHooks(callback, impls, opts), name)
        if not self.hookimpl_names(callback):
            raise TypeError(
                f"Callback {callback!r} (type {type(callback).__module__}."
                f"{type(callback).__qualname__}) is neither a tunekit.Callback nor an object "
                f"with @tunekit.hookimpl methods such as tunekit_on_trial_result. Subclass "
                f"tunekit.Callback (Ray Tune's method names) or decorate hook functions "
                f"with tunekit.hookimpl."
            )
        if self.is_registered(callback):
            raise ValueError(f"Callback {callback!r} was passed more than once.")
        return self.register(callback, name)


def _autoload_disabled() -> bool:
    return env_flag(AUTOLOAD_ENV)


def _plugin_modules() -> list[tuple[str, Any]]:
    modules = []
    for name in registry.names("plugin"):
        try:
            modules.append((name, registry.load("plugin", name)))
        except registry.PluginLoadError as error:
            # A broken third-party hook module must not stop every run: say so, skip it.
            warnings.warn(
                f"{error} The plugin is skipped for this run.", RuntimeWarning, stacklevel=3
            )
            logger.warning("Skipping tunekit plugin %r: %s", name, error)
    return modules


def make_plugin_manager(
    callbacks: Iterable[Any] | None = None, *, load_plugins: bool = True
) -> TunekitPluginManager:
    """A plugin manager with tunekit's hookspecs, the installed hook modules and ``callbacks``.

    ``callbacks`` are :class:`Callback` instances or objects (or modules) with
    ``@tunekit.hookimpl`` methods; anything else raises TypeError. The modules
    registered under the ``tunekit.plugins`` entry-point group are loaded once per
    process and registered too, unless ``load_plugins`` is False or the
    environment variable ``TUNEKIT_DISABLE_PLUGIN_AUTOLOAD`` is set. A plugin
    module that fails to import is skipped with a warning naming its distribution.
    """
    callbacks = list(callbacks or [])
    pm = TunekitPluginManager()
    if load_plugins and not _autoload_disabled():
        for name, module in _plugin_modules():
            if not pm.is_registered(module):
                pm.register(module, f"tunekit.plugins:{name}")
    # pluggy calls the most recently registered implementation first: register the
    # callbacks in reverse so they run in the order given, before the plugin modules.
    for position in range(len(callbacks) - 1, -1, -1):
        callback = callbacks[position]
        pm.register_callback(callback, f"callback:{position}:{type(callback).__qualname__}")
    # A @hookimpl whose name is no tunekit hook (a typo) is an error, not a silent no-op.
    pm.check_pending()
    return pm
