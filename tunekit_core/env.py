"""Reading tunekit's environment variables the same way everywhere."""

from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def env_flag(name: str, *fallbacks: str, default: bool = False) -> bool:
    """True when ``name`` (or the first set fallback, e.g. Ray Tune's name) is 1/true/yes/on.

    Any other value than those and 0/false/no/off/empty is a clear error; ``default``
    when none of them is set.
    """
    for key in (name, *fallbacks):
        raw = os.environ.get(key)
        if raw is None:
            continue
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(
            f"Environment variable {key}={raw!r} is not understood; set it to 1 (or true/yes/on) "
            "to enable, or 0 (false/no/off) to disable."
        )
    return default
