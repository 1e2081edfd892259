"""Where a recovered PostgreSQL instance may be built, and what may be written into it.

The folder of a point-in-time recovery comes from whoever asks for one (`pitr --target-dir`,
the PITR job's `target_dir`) and reaches a shell: pg_ctl starts the server through
`/bin/sh -c`, with the data directory and the log file inside double quotes. A name the shell
would read as code (`$`, a backtick, a quote, a backslash) or that breaks a line is refused,
not quoted: no real folder needs those characters, and a refusal cannot be undone by the next
parser in the chain (Python, sh, PostgreSQL's own configuration syntax) the way a quoting can.

A base backup's tar is extracted with the same suspicion. pg_basebackup (`-Ft -X fetch`) writes
only regular files and folders: pg_wal is a folder in base.tar and tablespaces go to tars of
their own, which we do not store. Any other member (a link, a device, a name leaving the
folder) means the tar is not one we wrote, and it is refused by name before it is written.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from auction_backup_pipelines.errors import ConfigurationError, RefusedError
from auction_backup_pipelines.repository.storage import IntegrityError

# What each character would do in pg_ctl's `exec postgres -D "<dir>" >> "<log>"` (sh -c).
SHELL_SPECIAL = {
    "$": "'$', which a shell expands",
    "`": "a backtick, which makes a shell run what it encloses",
    '"': "a double quote, which ends the quoting pg_ctl puts around it for its shell",
    "'": "a single quote (refused like every quote, so that no quoting has to be right)",
    "\\": "a backslash, which a shell reads as an escape",
}
ALLOWED = "choose a name without ' \" ` $ \\ or control characters"


def check_shell_safe(path: str | os.PathLike[str], what: str) -> None:
    """Refuse a path that a shell would not take literally inside double quotes (pg_ctl's)."""
    text = os.fspath(path)
    for ch in text:
        if ch in SHELL_SPECIAL:
            problem = SHELL_SPECIAL[ch]
        elif not ch.isprintable():
            problem = f"the control or unprintable character {ch!r}"
        else:
            continue
        raise ConfigurationError(
            f"{what} {text!r} contains {problem}; it would reach /bin/sh through pg_ctl, so {ALLOWED}. Nothing was created."
        )


def validate_target_dir(path: str | os.PathLike[str]) -> Path:
    """`path` as the folder of a recovered instance, or a one-line refusal before anything exists.

    It must be absolute (a relative one would land wherever the CLI or the Dagster run worker
    happens to run), safe for pg_ctl's shell, a new or empty folder whose parent exists, and
    outside every PostgreSQL data directory on this machine (the primary's above all)."""
    text = os.fspath(path)
    if not text:
        raise ConfigurationError(
            "the target folder is empty; give the absolute path of a new or empty folder. Nothing was created."
        )
    check_shell_safe(text, "target folder")
    if not os.path.isabs(text):
        raise ConfigurationError(
            f"target folder {text!r} is relative; give an absolute path (e.g. /srv/pitr/{os.path.basename(text) or 'restore'}). "
            "Nothing was created."
        )
    target = Path(os.path.normpath(text))
    if target.exists() and not target.is_dir():
        raise ConfigurationError(
            f"target folder {str(target)!r} exists and is not a folder; choose a new folder. Nothing was created."
        )
    if target.is_dir() and any(target.iterdir()):
        raise RefusedError(f"target directory {target} is not empty; choose a new folder (nothing was changed)")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigurationError(
            f"the parent of target folder {str(target)!r}, {str(parent)!r}, does not exist or is not a folder; "
            "create it first. Nothing was created."
        )
    real = target.resolve()
    for folder in (real, *real.parents):
        if (folder / "PG_VERSION").is_file():
            raise RefusedError(
                f"target folder {str(target)!r} is inside the PostgreSQL data directory {str(folder)!r}; a recovered instance "
                "must never be built in a server's data directory. Nothing was created."
            )
    return target


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why `member` may not be extracted into a data directory, or None."""
    name = member.name
    if name.startswith("/"):
        return "an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "a path leaving the data directory ('..')"
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if not (member.isreg() or member.isdir()):
        return f"a special file (tar type {member.type!r})"
    return None


def extract_base_tar(stream: BinaryIO, dest: Path, label: str) -> int:
    """Extract a base backup's tar `stream` into `dest`; returns the members written.

    Only regular files and folders inside `dest` are accepted; anything else raises an
    `IntegrityError` naming the member before it is written. tarfile's `data` filter runs
    after our check as a second guard (and drops setuid bits and the tar's owners: the
    caller gives the folder to the postgres user once it is complete)."""
    count = 0

    def checked(member: tarfile.TarInfo) -> tarfile.TarInfo:
        nonlocal count
        problem = _unsafe(member)
        if problem:
            raise IntegrityError(
                f"{label}: the tar holds {member.name!r}, {problem}; a pg_basebackup tar holds only files and folders "
                f"inside the data directory, so this is not a backup we wrote. Refused; nothing was written outside {dest}"
            )
        count += 1
        return member

    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter=lambda member, path: tarfile.data_filter(checked(member), path))
            else:
                # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters: our check
                # alone decides, the tar's owners are not applied, and its modes only as the
                # `data` filter would (no setuid, setgid, sticky or group/other write bits)
                for member in tar:
                    tar.extract(checked(member), dest, set_attrs=False)
                    os.chmod(dest / member.name, member.mode & 0o755)
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        # a damaged byte reaches the decompressor or the tar reader before the stream's sha256
        # is checked at its end (base_backup.inspect_tar says the same in the same words)
        raise IntegrityError(f"{label}: the stored tar cannot be read ({exc}); the backup is corrupt or truncated") from None
    return count
