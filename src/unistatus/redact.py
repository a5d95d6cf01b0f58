"""Secrets out of everything unistatus shows, writes or logs: one function, :func:`redact`.

A database password can arrive in every form libpq accepts, and in forms it does not:

- URL userinfo: ``postgresql://user:PW@host/db`` (also several hosts, any scheme);
- URL query parameters: ``?password=PW``, ``&sslpassword=PW``;
- key=value connection strings: ``host=h password=PW`` or ``password = 'P W'``;
- malformed URLs that still carry one: ``postgresql//user:PW@host/db``.

:func:`redact` works on any text (a URL, an error message, a log line) and replaces each
password with ``***``; it never parses, so text it cannot make sense of is still cleaned.
It is used by ``diagnose``, the archive manifest, error messages (the CLI's and the
API's), the service's log and ``/api/v1/status``. Webhook URLs embed their secret in the
path and are shown by :func:`redact_webhook` as scheme and host only.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

__all__ = [
    "REDACTED",
    "RedactingFormatter",
    "log_redacted",
    "redact",
    "redact_values",
    "redact_webhook",
]

REDACTED = "***"

# Each value runs to the next whitespace (the query value also to "&" or "#"), quotes
# included: a password may contain a quote, and cutting it short would show the rest.
# Text around a redacted value may lose a closing quote; a password never shows.

# user:PW@ after "//" or "scheme:/" (a URL, well formed or not: postgresql//u:PW@h,
# postgresql:/u:PW@h), or after a database's bare scheme (postgresql:u:PW@h): the
# password runs to the last "@" before the next whitespace, so one containing "@" or
# ":" is covered whole. One holding a space (libpq takes it) runs across it to the last
# "@" of the line that a host follows, when no "/" comes before its first space: a
# URL's path ("//db:5432/app; user alice@corp") is never taken for a password, a
# password never shows; text after a URL without a path may go with it.
_PASSWORD = r"(?:(?=[^\s/]*[ \t])[^\n]*(?=@[\w.\-\[\]:%]+(?:[/:?'\",\s)]|$))|\S*)"
_USERINFO = re.compile(
    r"((?://|\b[A-Za-z][A-Za-z0-9+.-]*:/|\bpostgres(?:ql)?(?:\+\w+)?:)[^\s/@:]*:)"
    + _PASSWORD
    + r"(@)"
)
# After any other bare "scheme:" (a log line's "word:x:" is no URL): to the last "@"
# before the next whitespace.
_USERINFO_BARE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*:[^\s/@:]*:)\S*(@)")
# ?password=PW / &sslpassword=PW in a URL query; the keyword may be percent-encoded,
# as libpq decodes it.
_QUERY = re.compile(
    r"([?&](?:ssl)?(?:p|%70)(?:a|%61)(?:s|%73)(?:s|%73)(?:w|%77)(?:o|%6f)(?:r|%72)(?:d|%64)=)"
    r"[^&#\s]*",
    re.IGNORECASE,
)
# password=PW in a key=value connection string: a quoted value ('...' with \' escapes)
# or a bare one.
_KEYWORD = re.compile(
    r"((?<![\w?&%])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with every database password in it replaced by ``***``."""
    text = _USERINFO.sub(rf"\g<1>{REDACTED}\g<2>", text)
    text = _USERINFO_BARE.sub(rf"\g<1>{REDACTED}\g<2>", text)
    text = _QUERY.sub(rf"\g<1>{REDACTED}", text)
    return _KEYWORD.sub(rf"\g<1>{REDACTED}", text)


def redact_values(value: Any) -> Any:
    """Every string in a JSON-like value (dicts, lists) through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value


def redact_webhook(url: str) -> str:
    """A webhook URL as scheme and host: receivers (Slack's) keep the secret in the path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme or '?'}://{host}/{REDACTED}"


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output, tracebacks included, went through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """To ``sys.stderr`` as it is when a record comes, not as it was when the handler
    was made: while Rich draws progress bars it redirects stderr, and prints what comes
    that way above them (written to the stderr of before, a warning landed among the
    bars and the next refresh drew them over it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def log_redacted(stream: TextIO | None = None, level: int = logging.WARNING) -> logging.Handler:
    """Send unistatus's log records to ``stream`` (None: stderr, as it is when each
    record comes) through :func:`redact`.

    For programs that have no logging set up of their own (the CLI, ``serve``): without
    it, Python prints warnings raw through its last-resort handler.
    """
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setLevel(level)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logging.getLogger("unistatus").addHandler(handler)
    return handler
