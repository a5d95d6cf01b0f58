"""The config file (``UNISTATUS_CONFIG``) as a file: there, readable, UTF-8 TOML text,
and kept from other users when it holds a secret.

Each refusal is a ConfigError naming the variable and the path, never the driver's
``UnicodeDecodeError`` or ``PermissionError`` (which named neither); the file's content
is never quoted (it may hold a token).
"""

from __future__ import annotations

import logging
import stat
import tomllib
from pathlib import Path
from typing import Any

from unistatus.errors import ConfigError

log = logging.getLogger("unistatus.config")

# The settings that hold a secret: the file holding one is for its owner's eyes only.
SECRET_KEYS = ("admin_token", "writer_token", "api_tokens", "database_url", "webhook_urls")
_BOM = b"\xef\xbb\xbf"
_warned: set[tuple[str, str]] = set()  # (the file, what): each said once per process


def read_config_file(variable: str, path: str) -> None:
    """Refuse ``path`` unless it is a regular file of UTF-8 TOML this process can read;
    warn when others may change it, or read the secrets it holds."""
    said = f"{variable}={path}: "
    where = Path(path)
    try:
        mode = where.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(said + "no such file") from None
    except OSError as exc:
        raise ConfigError(said + f"cannot be read: {exc.strerror or exc}".lower()) from None
    if stat.S_ISDIR(mode):
        raise ConfigError(said + "a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ConfigError(said + "not a regular file")
    try:
        data = where.read_bytes()
    except OSError as exc:
        raise ConfigError(said + f"cannot be read: {exc.strerror or exc}".lower()) from None
    if data.startswith(_BOM):
        raise ConfigError(
            said + "begins with a byte order mark, which TOML does not allow: save it as "
            "UTF-8 without one"
        )
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(
            said + f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "TOML files are UTF-8"
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        document = {}  # refused as not TOML by the settings' own reading, with its position
    _warn_of_others(said, mode, document)
    twice = spelled_twice(document.get("legacy_tables"))
    if twice is not None:
        raise ConfigError(said + twice)


def spelled_twice(tables: object) -> str | None:
    """Why ``legacy_tables`` of one source names a system twice, in two spellings
    (``cashout`` and ``CASHOUT``; the last one won, in silence: a probe), or None. From
    two sources (a variable beside the file) they are one system's keys together."""
    if not isinstance(tables, dict):
        return None
    seen: dict[str, str] = {}
    for key in tables:
        system = str(key).strip().upper()
        if system in seen:
            return f"legacy system {system} is given twice ({seen[system]!r}, {key!r})"
        seen[system] = str(key)
    return None


def _warn_of_others(said: str, mode: int, document: dict[str, Any]) -> None:
    if mode & stat.S_IWOTH:
        _warn_once(
            said,
            mode,
            "others may change it (mode %o): anyone on this host can change where "
            "unistatus writes or add an API token of their own; chmod 600 it",
        )
    elif mode & (stat.S_IRGRP | stat.S_IROTH) and _holds_a_secret(document):
        _warn_once(
            said,
            mode,
            "others may read it (mode %o) and it holds a secret (a token, a password or "
            "a webhook URL); chmod 600 it, or give the secret as a variable",
        )


def _warn_once(said: str, mode: int, what: str) -> None:
    if (said, what) not in _warned:
        _warned.add((said, what))
        log.warning("%s" + what, said, stat.S_IMODE(mode))


def _holds_a_secret(document: dict[str, Any]) -> bool:
    if any(document.get(key) for key in SECRET_KEYS if key != "database_url"):
        return True
    url = document.get("database_url")
    return isinstance(url, str) and ("password" in url.lower() or _has_password(url))


def _has_password(url: str) -> bool:
    head = url.partition("://")[2].rpartition("@")
    return bool(head[1]) and ":" in head[0]
