"""Text from devices, for one-line messages: the line that says what went wrong, cut to size.

Shared by the device runners (ssh, adb, qemu), whose tools print many lines where one matters.
"""

from __future__ import annotations


def last_line(text: str, limit: int = 200, *, skip: str | None = None) -> str:
    """The last non-empty line of ``text`` (leaving out lines holding ``skip``), cut to ``limit`` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and (skip is None or skip not in line)]
    return cut(lines[-1], limit) if lines else ""


def line_with(text: str, *needles: str, limit: int = 200) -> str:
    """The first line of ``text`` holding one of ``needles``, cut to ``limit`` characters; "" if none does."""
    for line in text.splitlines():
        if any(needle in line for needle in needles):
            return cut(line.strip(), limit)
    return ""


def cut(line: str, limit: int) -> str:
    """``line`` cut to ``limit`` characters."""
    return line if len(line) <= limit else line[: limit - 1] + "…"
