"""TLS to Redis: the one place that turns REDIS_TLS* into what each kind of connection needs.

Three kinds of connection reach a Redis server: redis-py (control commands, clusters), our own
RESP socket (`resp.BulkConnection`, the bulk reads and writes) and redis-cli children (`--rdb`).
With REDIS_TLS on, all three verify the server's certificate against REDIS_TLS_CA_FILE (the
system's CAs when empty) and, for the two Python ones, that it names the host we dialled
(`ssl.create_default_context` does both). redis-cli 7.0 (hiredis) checks the chain but not the
name; every redis-cli capture is preceded by a redis-py connection to the same host:port that
checks both (backup.py, cluster.py), so a server with a certificate for another name is refused
before redis-cli starts. A failed verification becomes one sentence naming
REDIS_TLS_CA_FILE (`certificate_problem`), never a traceback. Paths are not secrets: redis-cli
gets them in argv; its password still travels in REDISCLI_AUTH only.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings import RedisSettings

_VERIFY_MARKERS = ("certificate verify failed", "certificate_verify_failed", "hostname mismatch", "doesn't match")


def context(s: RedisSettings) -> ssl.SSLContext | None:
    """The client TLS context for `s` (None when REDIS_TLS is off): certificate and host name verified."""
    if not s.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=s.tls_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"REDIS_TLS_CA_FILE {s.tls_ca_file!r} is not a readable PEM file of CA certificates ({reason(exc)})"
        ) from None
    if s.tls_cert_file:
        try:
            ctx.load_cert_chain(s.tls_cert_file, s.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"REDIS_TLS_CERT_FILE {s.tls_cert_file!r} / REDIS_TLS_KEY_FILE {s.tls_key_file!r} are not a usable "
                f"certificate and key ({reason(exc)})"
            ) from None
    return ctx


def redis_py_options(s: RedisSettings) -> dict[str, Any]:
    """Keyword arguments for redis.Redis / RedisCluster: TLS with verification when REDIS_TLS is on."""
    if not s.tls:
        return {}
    context(s)  # a missing or malformed file fails here with its own message, not as "cannot connect"
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": s.tls_ca_file or None,
        "ssl_certfile": s.tls_cert_file or None,
        "ssl_keyfile": s.tls_key_file or None,
    }


def cli_args(s: RedisSettings) -> list[str]:
    """redis-cli's TLS flags for `s` (none when REDIS_TLS is off)."""
    if not s.tls:
        return []
    context(s)
    args = ["--tls"]
    if s.tls_ca_file:
        args += ["--cacert", s.tls_ca_file]
    if s.tls_cert_file:
        args += ["--cert", s.tls_cert_file, "--key", s.tls_key_file]
    return args


def reason(exc: BaseException) -> str:
    """The short reason of an OSError/SSLError, without the errno noise."""
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def handshake_problem(s: RedisSettings, host: str, port: int, timeout: float = 10.0) -> str | None:
    """Why a TLS handshake with host:port fails, as one sentence; None when it succeeds, or fails
    for a reason the caller's own connection reports (refused, unreachable).

    redis-py would wait its whole read timeout (minutes) on a plain port, which never answers a
    ClientHello; this bounded handshake names that case, and a failed verification, at once."""
    ctx = context(s)
    if ctx is None:
        return None
    where = f"Redis at {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return certificate_problem(str(exc), where)
    except TimeoutError:
        return f"{where} did not complete a TLS handshake within {timeout:g} s: is it a plain port? (REDIS_TLS is on)"
    except (ssl.SSLError, ConnectionResetError) as exc:
        return f"TLS handshake with {where} failed ({reason(exc)}): is it a TLS port? (REDIS_TLS is on)"
    except OSError:
        return None


def reset_problem(text: str, where: str, s: RedisSettings | None = None) -> str | None:
    """One sentence when a server reset the connection at once, as a TLS port does to a plain client."""
    if "reset by peer" not in text.lower():
        return None
    hint = "if that port serves TLS only, set REDIS_TLS=1" if s is None or not s.tls else "is it a Redis port?"
    return f"{where} reset the connection ({hint})"


def certificate_problem(text: str, where: str) -> str | None:
    """One sentence when `text` (an error from redis-py, ssl or redis-cli) says the certificate of
    the server `where` ("Redis at host:port") failed verification; None otherwise."""
    low = text.lower()
    if not any(marker in low for marker in _VERIFY_MARKERS):
        return None
    return (
        f"TLS certificate verification failed for {where}: its certificate is not signed by a CA "
        "in REDIS_TLS_CA_FILE, or does not name the host dialled (check REDIS_TLS_CA_FILE and REDIS_HOST)"
    )
