"""Setting values checked beyond their type, at load rather than at first use."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from unistatus.redact import redact_webhook

# A schema name that never needs quoting in SQL: lower case, digits, underscores.
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)


def check_webhook_url(url: str) -> str:
    """``url`` if an alert can be posted to it, else ValueError saying why (the URL shown
    as scheme and host: a receiver keeps its secret in the path). Found at load: each
    delivery to it would fail only when an alert fires."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises here)
    except ValueError as exc:
        why = "its port is not a number" if "port" in str(exc).lower() else "not a URL"
        raise ValueError(f"webhook {redact_webhook(url)}: {why}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"webhook {redact_webhook(url)}: not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"webhook {redact_webhook(url)}: no host")
    return url


def check_own_schema(name: str) -> str:
    """The name of the schema for unistatus's own tables, or ValueError saying why not.

    Only names that need no quoting are accepted: they appear in SQL that unistatus writes
    itself (the PostgreSQL function of revision 0007, the capture triggers) as well as in
    SQLAlchemy's, and an operator types them in psql; a name that needs quoting there is a
    mistake waiting to happen.
    """
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(
            f"schema {name!r} would need quoting in SQL: use lower-case letters, digits and "
            'underscores, starting with a letter or an underscore (e.g. "unistatus")'
        )
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ValueError(f"schema {name!r} is longer than PostgreSQL's 63-byte names")
    if name.startswith("pg_") or name == "information_schema":
        raise ValueError(f"schema {name!r} is reserved by PostgreSQL for its system catalogs")
    from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS  # lazy: SQLAlchemy

    if name in RESERVED_WORDS:
        raise ValueError(f"schema {name!r} is an SQL reserved word and would need quoting")
    return name
