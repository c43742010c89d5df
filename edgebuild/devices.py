"""Where validation also runs the artifact, as the user names it: ``host``, ``qemu``,
``ssh://user@host[:port]`` or ``adb[:SERIAL]`` (``--device`` or a profile's ``validate.device``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgebuild.errors import ConfigError


@dataclass(frozen=True)
class DeviceSpec:
    """Where validation also runs the artifact: the host only, emulated arm64 Linux, an SSH board, or adb."""

    kind: str  # host | qemu | ssh | adb
    user: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None

    @property
    def label(self) -> str:
        """The device as the user wrote it."""
        if self.kind == "ssh":
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"ssh://{user}{self.host}{port}"
        if self.kind == "adb":
            return f"adb:{self.serial}" if self.serial else "adb"
        return self.kind


def parse_device(spec: str) -> DeviceSpec:
    """``host``, ``qemu``, ``ssh://[user@]host[:port]`` or ``adb[:SERIAL]``; ConfigError otherwise."""
    if spec in ("host", "qemu"):
        return DeviceSpec(spec)
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        if serial is not None and not re.fullmatch(r"[A-Za-z0-9._:-]+", serial):
            raise ConfigError(f"device {spec!r}: {serial!r} is not an adb serial")
        return DeviceSpec("adb", serial=serial)
    match = re.fullmatch(r"ssh://(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?/?", spec)
    if match:
        port = int(match.group(3)) if match.group(3) else None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"device {spec!r}: port {port} is out of range")
        return DeviceSpec("ssh", user=match.group(1), host=match.group(2), port=port)
    raise ConfigError(
        f"unknown device {spec!r}",
        hint="use host, qemu, ssh://user@host[:port] or adb[:SERIAL]",
    )
