"""C-level stderr, captured: TensorFlow's converter and the TFLM interpreter print straight to fd 2."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send C-level stderr (fd 2) to a buffer for the duration; yields a list that gets its text.

    TensorFlow's converter and the TFLM interpreter print straight to fd 2; this keeps
    that off the user's terminal while keeping it for error messages.
    """
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as buffer:
        saved = os.dup(2)
        os.dup2(buffer.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            captured.append(buffer.read().decode("utf-8", "replace"))
