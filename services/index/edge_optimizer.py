"""The child process that optimises a copy of a Qdrant Edge shard (`python -m services.index.edge_optimizer DIR`).

qdrant-edge 0.9 holds the GIL for a whole `optimize()`, so the serving process runs it here, on a
copy it made, and swaps the result in (edge.EdgeIndex.optimize_in_background). Exit status 0: the
copy at DIR is optimised and flushed, and stdout says VACUUMED: no deleted point is left in it, so
its sparse statistics count live points only (the shard's counts cannot tell: they add the dense
vectors of indexed segments to the sparse ones, deleted included).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path

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


VACUUMED = "VACUUMED"
# The shard's settings file, inside its directory.
CONFIG_FILE = "edge_config.json"
# Vacuum every segment holding a deleted point, however few (Qdrant's defaults wait for 20% and
# 1,000 of them): deleted points skew the sparse statistics (qdrant/qdrant#6735).
_VACUUM_ALL = {"deleted_threshold": 0.0, "vacuum_min_vector_number": 0}


def is_shard(path: Path) -> bool:
    """Whether the directory `path` holds an Edge shard (its settings file is written at creation)."""
    return (path / CONFIG_FILE).is_file()


def optimise_copy(path: str, parent_pid: int) -> None:
    """Vacuum and optimise the copy at `path` (vacuum_and_optimise), as the parent's child."""
    _die_with_parent()
    _yield_to_searches()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(3)
    vacuum_and_optimise(Path(path))


def vacuum_and_optimise(path: Path) -> bool:
    """Load the (closed) shard at `path` with vacuum-all settings, optimise and flush it; whether
    its optimisation changed anything.

    The settings are the shard's only while this runs (a load applies them): its own go back after,
    so the serving process's loads never start a vacuum while holding the GIL."""
    config_file = path / CONFIG_FILE
    own = config_file.read_text()
    _replace_text(config_file, json.dumps({**json.loads(own), "optimizers": _VACUUM_ALL}))
    try:
        shard = qe.EdgeShard.load(str(path))  # the load already vacuums, under these settings
        try:
            changed = bool(shard.optimize())
            shard.flush()
        finally:
            shard.close()
    finally:
        _replace_text(config_file, own)
    return changed


def _replace_text(path: Path, text: str) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


if __name__ == "__main__":
    optimise_copy(sys.argv[1], int(sys.argv[2]))
    print(VACUUMED)
