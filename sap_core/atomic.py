"""Write a folder atomically: fill a sibling temp dir, then rename it over the destination.

Readers (a worker loading a model, a resume reading a checkpoint) never see half a folder, and a
crash mid-write leaves the previous version in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def write_dir_atomically(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temp dir beside ``out_dir``, then move it into place.

    Args:
        out_dir: Destination folder; an existing one is replaced only after ``write`` succeeded.
        write: Fills the temp folder it is given.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(tmp)
        if out_dir.exists():
            # Move the old folder aside first so the swap itself is two renames, not an rmtree.
            old = out_dir.parent / f".{out_dir.name}.old-{time.time_ns()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
