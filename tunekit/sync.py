"""Syncing the experiment directory to storage (Ray path: ``ray.tune.syncer``).

``tunekit.run(..., sync_config=SyncConfig(upload_dir="s3://bucket/experiments"))``
mirrors the experiment to ``<upload_dir>/<name>``; ``resume="REMOTE"`` fetches it
back. See :mod:`tunekit_core.sync`.
"""

from tunekit_core.sync import (
    ExperimentSyncer,
    SyncConfig,
    SyncerCallback,
    download_experiment,
    make_syncer_callback,
    sync_down,
)

__all__ = [
    "ExperimentSyncer",
    "SyncConfig",
    "SyncerCallback",
    "download_experiment",
    "make_syncer_callback",
    "sync_down",
]
