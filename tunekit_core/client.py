"""``TuneClient``: talk to the control server of a running experiment.

The methods are those of Ray Tune's ``TuneClient`` (``ray.tune.web_server``) and
return the server's JSON documents as dicts: ``get_all_trials()`` ->
``{"trials": [info, ...]}``, ``get_trial(id)`` -> ``{"trial": info}``. Unlike Ray
Tune, ``config`` and ``result`` in ``info`` are plain JSON values (not hex-encoded
cloudpickle), and an error answer raises :class:`TuneError` with the server's
message. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import TuneError

__all__ = ["TuneClient"]

_DEFAULT_TIMEOUT_S = 60.0


class TuneClient:
    """Client of the server started by ``tunekit.run(server_port=PORT)``.

    Args:
        tune_address: ``"host:port"`` (``"http://host:port"`` too), or the host
            when ``port_forward`` is given.
        port_forward: the server's port (Ray Tune's name for it).
        token: the server's token, sent as ``Authorization: Bearer <token>``;
            default: the ``TUNEKIT_SERVER_TOKEN`` environment variable.
    """

    def __init__(self, tune_address: str, port_forward: int | None = None, *,
                 token: str | None = None):
        host, port = _split_address(tune_address, port_forward)
        self._tune_address = host
        self._port_forward = port
        netloc = f"[{host}]" if ":" in host else host
        self._path = f"http://{netloc}:{port}"
        self._token = token if token is not None else (os.environ.get("TUNEKIT_SERVER_TOKEN") or None)

    # ---- Ray Tune's methods
    def get_all_trials(self, timeout: float | None = None) -> dict:
        """``{"trials": [info, ...]}``: every trial of the run."""
        return self._request("GET", "/trials", timeout=timeout)

    def get_trial(self, trial_id: str, timeout: float | None = None) -> dict:
        """``{"trial": info}`` of ``trial_id``; an unknown id raises TuneError."""
        return self._request("GET", f"/trials/{_quote(trial_id)}", timeout=timeout)

    def add_trial(self, name: str | None, specification: dict) -> dict:
        """Add trials to the experiment ``name`` (None: the run's first experiment).

        ``specification`` is ``{"config": {...}}`` (optionally ``"num_samples"``);
        ``{"grid_search": [...]}`` values expand into one trial per variant.
        Returns ``{"trials": [info, ...]}`` of the new trials.
        """
        return self._request("POST", "/trials", {"name": name, "spec": specification})

    def stop_trial(self, trial_id: str) -> dict:
        """Stop ``trial_id`` (it ends TERMINATED); returns ``{"trials": [info]}``."""
        return self._request("PUT", f"/trials/{_quote(trial_id)}")

    def stop_experiment(self) -> dict:
        """End the run gracefully; returns ``{"trials": [info, ...]}``."""
        return self._request("PUT", "/stop_experiment")

    @property
    def server_address(self) -> str:
        return self._tune_address

    @property
    def server_port(self) -> int:
        return self._port_forward

    def __repr__(self) -> str:
        return f"TuneClient({self._path!r})"

    # ---- plumbing
    def _request(self, method: str, path: str, body: Any = None,
                 timeout: float | None = None) -> dict:
        url = self._path + path
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or _DEFAULT_TIMEOUT_S) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise TuneError(f"{method} {url} failed ({exc.code}): {_message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TuneError(
                f"Cannot reach the tunekit control server at {self._path}: {reason}. Is the run "
                "still going, and was it started with run(server_port=...) on this address?"
            ) from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or exc.reason


def _quote(trial_id: str) -> str:
    return urllib.parse.quote(str(trial_id), safe="")


def _split_address(address: str, port: int | None) -> tuple[str, int]:
    text = str(address).strip()
    if "://" in text:
        text = urllib.parse.urlsplit(text).netloc
    text = text.rstrip("/")
    if port is None:
        parsed = urllib.parse.urlsplit(f"//{text}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        host = parsed.hostname
        if port is None or not host:
            raise ValueError(
                f"The server address {address!r} has no port: pass 'host:port' (for example "
                "'127.0.0.1:4321'), or the port as the second argument."
            )
        return host, port
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise ValueError(f"port_forward must be a port number (1 to 65535), got {port!r}.")
    return text.strip("[]"), port
