"""Track persistence: scoring 2D track histories so that brief flashes and clutter are rejected.

Imports numpy and torch only; a track is an array of rows [t, cx, cy, w, h, score, observed].
"""
from .gate import HISTORY_COLUMNS, Gate, HitCountGate, pad_histories

__all__ = ["Gate", "HISTORY_COLUMNS", "HitCountGate", "pad_histories"]
