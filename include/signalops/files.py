"""Atomic file writes: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _atomic(path: Path, write: Callable[[str], object], suffix: str = "") -> None:
    """Run ``write(tmp)`` on a temporary file next to ``path``, then rename it into place,
    so readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Parquet (zstd)."""
    _atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"), ".parquet")


def atomic_write_arrow(path: Path, table: pa.Table) -> None:
    """Arrow IPC (zstd): several times faster to write and read than Parquet."""
    from pyarrow import feather

    _atomic(path, lambda tmp: feather.write_feather(table, tmp, compression="zstd"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))
