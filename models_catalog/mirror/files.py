"""A read-only window on a store blob, for WSGI servers' ``wsgi.file_wrapper``."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO


class RangeFile:
    """Reads ``[start, stop)`` of a file and then reports end of file.

    It has no ``fileno``: a server that ``sendfile``s a file object to its end (ignoring
    Content-Length) must not get one for a range, so ranges are read and written in chunks.
    """

    def __init__(self, path: Path, start: int, stop: int) -> None:
        self._handle: BinaryIO = path.open("rb")
        self._handle.seek(start)
        self._remaining = stop - start

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        if size < 0 or size > self._remaining:
            size = self._remaining
        data = self._handle.read(size)
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        self._handle.close()
