"""Named random streams: one independent, reproducible generator per (seed, purpose, index...).

Every phase of the simulator draws from its own stream, so switching a phenomenon off changes the
draws of that phenomenon only ("common random numbers"): the off/on comparisons of the
calibration report differ by the mechanism, not by unrelated noise.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str, *index: int) -> np.random.Generator:
    """A generator for ``name`` (e.g. ``"users"``) and optional integer ``index`` (e.g. day)."""
    key = [int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), *(int(i) for i in index)]
    return np.random.default_rng(np.random.SeedSequence(key))
