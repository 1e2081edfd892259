"""The one error root of the project: every engine failure an operator can act on is a `BackupError`.

The Dagster layer and the CLI catch `BackupError` alone and show its message, which names the
problem (and, where it can, the setting to fix and whether anything was written). Each system
keeps its own subclass (`PostgresError`, `RedisBackupError`, `KafkaBackupError`, `StorageError`…)
so a caller may still tell them apart; the cause classes below cut across systems, so a refusal
or a failed verification can be recognised whatever system raised it.
"""

from __future__ import annotations


class BackupError(Exception):
    """Root of every error the engines raise on purpose."""


class ConfigurationError(BackupError, ValueError):
    """A setting or an input is malformed; nothing was done."""


class UnavailableError(BackupError):
    """A server, store or helper program the operation needs cannot be reached or started."""


class RefusedError(BackupError):
    """The operation was refused before anything was written (a guard rail, not a fault)."""


class VerificationError(BackupError):
    """What was read back or restored does not match what the backup recorded."""
