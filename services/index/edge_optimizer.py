"""The child process that optimises a copy of a Qdrant Edge shard (`python -m services.index.edge_optimizer DIR`).

qdrant-edge 0.9 holds the GIL for a whole `optimize()`, so the serving process runs it here, on a
copy it made, and swaps the result in (edge.EdgeIndex.optimize_in_background). Exit status 0: the
copy at DIR is optimised and flushed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import qdrant_edge as qe


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies: an orphan would keep writing into a
    copy that the restarted parent deletes."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover
        return


# Background work: the serving process's searches come first on the cores.
OPTIMISER_NICE = 10


def _yield_to_searches() -> None:
    try:
        os.nice(OPTIMISER_NICE)  # relative to the serving process's (capped at 19 by the kernel)
    except (OSError, AttributeError):  # pragma: no cover (not permitted, or not POSIX)
        return


def optimise_copy(path: str, parent_pid: int) -> None:
    """Load the shard at `path`, optimise it and flush it."""
    _die_with_parent()
    _yield_to_searches()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(3)
    shard = qe.EdgeShard.load(path)
    try:
        shard.optimize()
        shard.flush()
    finally:
        shard.close()


if __name__ == "__main__":
    optimise_copy(sys.argv[1], int(sys.argv[2]))
