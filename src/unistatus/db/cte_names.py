"""The names of unistatus's common table expressions.

A CTE's name hides every table of that name the statement refers to unqualified, and a
legacy table is the application's: it may be called ``changed``, ``claim`` or ``src``.
Every ``WITH`` of ours is therefore named in unistatus's own namespace (the prefix of its
tables), which an application's table does not take.
"""

from __future__ import annotations

__all__ = ["PREFIX", "cte_name"]

PREFIX = "unistatus_"


def cte_name(name: str) -> str:
    """``name`` in unistatus's namespace: ``cte_name("claim") == "unistatus_claim"``."""
    return f"{PREFIX}{name}"
