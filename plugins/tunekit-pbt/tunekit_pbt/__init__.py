"""tunekit's population-based schedulers (the ``tunekit-pbt`` distribution).

- :class:`PopulationBasedTraining` (``scheduler="pbt"``)
- :class:`PopulationBasedTrainingReplay` (``scheduler="pbt_replay"``)
- :class:`PB2` (``scheduler="pb2"``), whose GP needs numpy and scipy (imported when
  it first explores)
"""

from __future__ import annotations

from .pb2 import PB2
from .pbt import PopulationBasedTraining, PopulationBasedTrainingReplay

__all__ = ["PB2", "PopulationBasedTraining", "PopulationBasedTrainingReplay"]
