"""``tunekit.web_server`` (Ray path ``ray.tune.web_server``): the control server's client.

``TuneClient("127.0.0.1:4321")`` talks to ``tunekit.run(server_port=4321)``; see
``docs/dashboard.md``. Configs and results arrive as plain JSON, not as Ray Tune's
hex-encoded cloudpickle.
"""

from tunekit_core.client import TuneClient

__all__ = ["TuneClient"]
