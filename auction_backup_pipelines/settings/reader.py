"""Reads one environment variable at a time, each with its validation and a one-line error naming it.

The settings modules parse their groups through `Reader`; nothing else in the project reads the
environment (child processes get theirs from child_env)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import os
import re
from collections.abc import Mapping

from auction_backup_pipelines.errors import ConfigurationError

_KEY_ITEM = re.compile(r"^[A-Za-z0-9._-]{1,64}:(.+)$")
_HOST = re.compile(r"^[A-Za-z0-9._%:-]+$")
_RATE = re.compile(r"^(?:(\d+)([kKmMgG]?))?$")
_RATE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def host_port(text: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[IPv6]:port", the host lowercased and unbracketed; None if it is not one."""
    host, _, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = _HOST.match(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    return (host.lower(), int(port)) if ok else None


class Reader:
    """Reads one variable at a time from a mapping, each with its validation and a one-line error."""

    def __init__(self, environ: Mapping[str, str] | None):
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str:
        """The value as set, '' when unset (secrets and paths: taken verbatim)."""
        return self.environ.get(name) or ""

    def text(self, name: str, default: str) -> str:
        """The value, or `default` when unset or empty."""
        return self.raw(name) or default

    def stripped(self, name: str, default: str = "") -> str:
        return self.raw(name).strip() or default

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None, unit: str = "") -> int:
        raw = self.raw(name)
        if not raw.strip():
            return default
        what = f"a whole number{' of ' + unit if unit else ''}"
        if minimum is not None and maximum is not None:
            what += f" from {minimum} to {maximum}"
        elif minimum is not None:
            what += f" >= {minimum}"
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be {what}, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigurationError(f"{name} must be {what}, got {raw!r}")
        return value

    def positive(self, name: str, default: float, unit: str = "seconds") -> float:
        raw = self.raw(name)
        if not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of {unit}, got {raw!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{name} must be positive, got {raw!r}")
        return value

    def flag(self, name: str) -> bool:
        """1, true, yes, on (any case) are on; anything else, or unset, is off."""
        return self.raw(name).strip().lower() in ("1", "true", "yes", "on")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def keyring(self, name: str) -> str:
        """'<key id>:<base64 32-byte key>', comma- or space-separated; decoded by repository/encryption."""
        raw = self.raw(name)
        items = [item for item in re.split(r"[,\s]+", raw.strip()) if item]
        for item in items or ([raw] if raw else []):
            match = _KEY_ITEM.match(item)
            try:
                ok = match is not None and len(base64.b64decode(match.group(1), validate=True)) == 32
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ConfigurationError(
                    f"{name} is malformed (expected <key id>:<base64 of 32 bytes>, comma-separated; the value is not shown)"
                )
        return raw

    def addresses(self, name: str) -> tuple[str, ...]:
        """host:port items, comma- or space-separated, each checked by `host_port`."""
        listed = items(self.raw(name), ", ")
        if bad := [item for item in listed if host_port(item) is None]:
            raise ConfigurationError(f"{name} must be host:port addresses, comma-separated, got {self.raw(name)!r} ({bad[0]!r})")
        return listed

    def byte_rate(self, name: str) -> int:
        """Bytes per second: a whole number with an optional binary suffix (k, M, G: 1024, 1024², 1024³);
        0 when unset, empty or 0 (unlimited)."""
        raw = self.raw(name).strip()
        match = _RATE.match(raw)
        if not match:
            raise ConfigurationError(
                f"{name} must be a byte rate per second such as 1048576, 1024k or 32M (empty: unlimited), got {self.raw(name)!r}"
            )
        return int(match.group(1) or 0) * _RATE_UNITS[(match.group(2) or "").lower()]

    def day(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a day YYYY-MM-DD, got {value!r}") from None
        if len(value) != 10:
            raise ConfigurationError(f"{name} must be a day YYYY-MM-DD, got {value!r}")
        return value


def items(raw: str, separators: str = ",") -> tuple[str, ...]:
    for sep in separators[1:]:
        raw = raw.replace(sep, separators[0])
    return tuple(item.strip() for item in raw.split(separators[0]) if item.strip())


# --------------------------------------------------------------------------- the systems backed up
