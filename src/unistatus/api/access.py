"""Who may do what through the HTTP API: bearer tokens, their names and their roles.

Tokens come only from the settings (``admin_token``, ``writer_token``, ``api_tokens``);
role ``writer`` may create and change statuses, ``admin`` may also ``force`` and use the
control endpoints; what no token is configured for is disabled, never open. A presented
token is compared with every configured one (``hmac.compare_digest``, no early exit),
and the history names the token (:func:`actor_for`), never its value. Details:
docs/runbook.md, "Access".
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from unistatus.config import Settings
from unistatus.errors import InputError

__all__ = [
    "LABEL_DELIMITERS",
    "MAX_LABEL_CHARS",
    "Principal",
    "Role",
    "actor_for",
    "authenticate",
    "enabled",
    "label_problem",
]

Role = Literal["writer", "admin"]
# token:<name up to 32> (<label up to 64>) fits unified_status_history.triggered_by (128).
MAX_LABEL_CHARS = 64
# The characters that frame the label: one in it would close the label's group and open
# another ("admin) (x" -> "token:writer (admin) (x)"), which reads as a different actor.
LABEL_DELIMITERS = "()"


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot follow a token's name in the history, or None."""
    if any(c in LABEL_DELIMITERS for c in label):
        return (
            "must not contain parentheses: the history records it as "
            "token:<name> (<label>), and a parenthesis in it could read as another actor"
        )
    return None


@dataclass(frozen=True)
class Principal:
    """The holder of a valid token: its name (for the history) and its role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return self.role == "admin" or role == "writer"


def _tokens(settings: Settings) -> list[tuple[str, Role, str]]:
    tokens: list[tuple[str, Role, str]] = []
    if settings.admin_token:
        tokens.append(("admin", "admin", settings.admin_token))
    if settings.writer_token:
        tokens.append(("writer", "writer", settings.writer_token))
    tokens += [(t.name, t.role, t.token) for t in settings.api_tokens]
    return tokens


def enabled(settings: Settings, role: Role) -> bool:
    """Whether any configured token may act as ``role`` (else those endpoints are off)."""
    return any(Principal(name, r).may(role) for name, r, _ in _tokens(settings))


def authenticate(settings: Settings, presented: str | None) -> Principal | None:
    """The principal whose token was presented, or None; constant time over all tokens."""
    given = (presented or "").encode("utf-8", "surrogatepass")
    found: Principal | None = None
    for name, role, token in _tokens(settings):
        if hmac.compare_digest(given, token.encode("utf-8", "surrogatepass")) and found is None:
            found = Principal(name, role)
    return found if presented else None


def actor_for(principal: Principal, label: str | None = None) -> str:
    """What the history's ``triggered_by`` says: ``token:<name>`` and the caller's label
    (the request models refuse a label :func:`label_problem` finds fault with; checked
    again here, so no other caller can store a forged structure)."""
    actor = f"token:{principal.name}"
    problem = label_problem(label) if label else None
    if problem:
        raise InputError(f"the actor label {problem}")
    return f"{actor} ({label})" if label else actor
