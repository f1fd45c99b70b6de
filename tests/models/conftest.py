"""Model tests run single-threaded: the CI box has 2 cores shared with other test processes, and
two OpenMP threads that wait on each other make small-batch timings erratic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
