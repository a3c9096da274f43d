"""Track persistence: scoring 2D track histories so that brief flashes and clutter are rejected.

Imports numpy and torch only (torch on first use of the learned filter); a track is an array of
rows [t, cx, cy, w, h, score, observed].
"""
from .errors import HistoryError, WeightsError
from .gate import (
    HISTORY_COLUMNS,
    Gate,
    HitCountGate,
    RateGuardedGate,
    history_interval,
    pad_histories,
)

__all__ = ["Gate", "HISTORY_COLUMNS", "HistoryError", "HitCountGate", "PersistenceFilter", "RateGuardedGate",
           "TrackPersistenceFilter", "WeightsError", "history_interval", "pad_histories"]


def __getattr__(name):  # torch is imported only when the learned filter is used
    if name in ("PersistenceFilter", "TrackPersistenceFilter"):
        from . import filter as _filter

        return getattr(_filter, name)
    raise AttributeError(f"module 'persistence' has no attribute {name!r}")
