"""Where a refused setting was written, said in its refusal: the config file's key
(its table, ``[[api_tokens]]`` number N), the variable, what it may have meant."""

from __future__ import annotations

import difflib
import os
import tomllib
from typing import Any, get_args, get_origin

from pydantic import BaseModel

ENV_PREFIX = "UNISTATUS_"
CONFIG_FILE_ENV = "UNISTATUS_CONFIG"


def unknown_keys(
    root: type[BaseModel], locs: list[tuple[int | str, ...]], path: str | None, given: Any
) -> str:
    """Each key no setting reads, where it was written and what it may have meant."""
    document: Any = {}
    if path:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    in_file: list[str] = []
    elsewhere: list[str] = []
    for loc in sorted(locs, key=len):  # the top level's first
        key, table = str(loc[-1]), loc[:-1]
        close = difflib.get_close_matches(key, _keys_of(root, table), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if _holds(document, loc):
            where = f" in {_toml_table(table)}" if table else ""
            in_file.append(f"unknown key {key!r}{where}{hint}")
            continue
        where = f" in {'.'.join(str(p) for p in table)}" if table else ""
        variable = None if _holds(given, loc) else variable_of(loc)
        source = f"{variable}: " if variable else ""
        elsewhere.append(f"{source}unknown setting {key!r}{where}{hint}")
    if in_file:
        elsewhere.insert(0, f"{CONFIG_FILE_ENV}={path}: " + "; ".join(in_file))
    return "; ".join(elsewhere)


def _keys_of(root: type[BaseModel], table: tuple[int | str, ...]) -> list[str]:
    """The keys a table of the settings has (``()``: the top level)."""
    annotation: Any = root
    parts = list(table)
    while parts:
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        field = annotation.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        annotation = field.annotation
        if get_origin(annotation) in (dict, list) and parts:
            parts.pop(0)  # a system's name, a token's place in the list
            annotation = get_args(annotation)[-1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _holds(data: Any, loc: tuple[int | str, ...]) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def _toml_table(table: tuple[int | str, ...]) -> str:
    *names, last = table
    if isinstance(last, int):
        return f"[[{'.'.join(str(p) for p in names)}]] number {last + 1}"
    return f"[{'.'.join(str(p) for p in table)}]"


def source_of(loc: tuple[int | str, ...], path: str | None, given: Any) -> str:
    """Where the value at ``loc`` was written, as a refusal's prefix: the variable the user
    set (``UNISTATUS_NETWORK__CONNECT_TIMEOUT_SECONDS: ``) or the file (``UNISTATUS_CONFIG=
    path: ``), in the order the sources win; nothing for a keyword (the caller's, or the
    command line's --database-url), whose setting's name is what the caller wrote."""
    if not loc or _holds(given, loc):
        return ""
    variable = variable_of(loc)
    if variable is not None:
        return f"{variable}: "
    if path:
        with open(path, "rb") as file:
            if _holds(tomllib.load(file), loc):
                return f"{CONFIG_FILE_ENV}={path}: "
    return ""


def variable_of(loc: tuple[int | str, ...]) -> str | None:
    """The variable that gave the key at ``loc``: its own (UNISTATUS_BACKFILL__WOKERS), or
    the JSON of a table holding it (UNISTATUS_API_TOKENS); None: none did."""
    present = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p) for p in loc[:end]).upper()
        if name in present:
            return present[name]
    return None
