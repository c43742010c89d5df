"""The build's memory: its peak, and a bound it may not cross.

A watcher thread samples the build process's resident memory twice a second; past
the bound it interrupts the build, which then stops with a BuildError saying how
much it used. (An address-space rlimit cannot do this: TensorFlow reserves far more
virtual memory than it ever touches.)
"""

from __future__ import annotations

import _thread
import os
import resource
import threading
from types import TracebackType

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def peak_bytes() -> int:
    """The largest resident memory of this process, or of any child it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024  # Linux reports KiB


class MemoryWatch:
    """Interrupts the main thread (KeyboardInterrupt) when resident memory passes ``limit_bytes``."""

    def __init__(self, limit_bytes: int | None, interval_s: float = 0.5):
        self.limit_bytes = limit_bytes
        self.interval_s = interval_s
        self.exceeded_at: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        assert self.limit_bytes is not None
        while not self._stop.wait(self.interval_s):
            used = resident_bytes()
            if used > self.limit_bytes:
                self.exceeded_at = used
                _thread.interrupt_main()
                return

    def __enter__(self) -> MemoryWatch:
        if self.limit_bytes is not None:
            self._thread = threading.Thread(target=self._watch, name="edgebuild-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
