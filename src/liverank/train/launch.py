"""``--nproc N`` on one machine: re-run the same ``liverank`` command on N ranks with torchrun's
launcher (what ``torchrun --standalone --nproc-per-node N`` does: a rendezvous on localhost, no
restarts). Each rank then finds ``RANK`` / ``WORLD_SIZE`` in its environment
(:func:`liverank.train.distributed.init_from_env`). Several machines: ``docs/scaling.md``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence

from liverank.errors import LiverankError


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (each rank is one process)."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return rest


def run_ranks(argv: Sequence[str], nproc: int) -> int:
    """Run ``liverank <argv minus --nproc>`` on ``nproc`` local ranks; 0 when all succeed,
    else :class:`LiverankError` naming the first rank that failed (its own message, printed by
    that rank, is above)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "liverank.cli", *strip_nproc(argv))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise LiverankError(
            f"rank {rank} of {nproc} failed with exit code {failure.exitcode} "
            "(its message is above)"
        ) from None
    return 0
