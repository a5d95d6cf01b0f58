"""The HTTP API's request bodies and path parameters, as pydantic models.

Each field applies the library's own input rules (:mod:`unistatus.domain.inputs`), so a
value the library would refuse is a 422 here, with the same reason. The class names
are the OpenAPI schema's component names.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
)

from unistatus import errors
from unistatus.api.access import MAX_LABEL_CHARS, label_problem
from unistatus.domain.ids import MAX_LEGACY_ID
from unistatus.domain.inputs import MAX_BIGINT, MAX_REASON_CHARS, check_metadata, check_text
from unistatus.domain.statuses import DualWriteMode, LegacySystemType, UnifiedTransactionType

__all__ = [
    "Actor",
    "EmergencyRollback",
    "EntityId",
    "ErrorBody",
    "ModeChange",
    "PhaseAdvance",
    "PhaseRollback",
    "Reason",
    "ReasonedAction",
    "StatusText",
    "StatusUpdate",
    "TransactionCreate",
    "ValidationIssue",
]


def _text(name: str, max_chars: int) -> Any:
    """The library's text rule (:func:`unistatus.domain.inputs.check_text`) as a field check."""

    def check(value: str) -> str:
        try:
            check_text(name, value, max_chars)
        except errors.InputError as exc:
            raise ValueError(str(exc)) from None
        return value

    return AfterValidator(check)


_STRIPPED = StringConstraints(strip_whitespace=True, min_length=1)

Reason = Annotated[StrictStr, _STRIPPED, _text("reason", MAX_REASON_CHARS)]


def _label(name: str) -> Any:
    """A label the history frames after the token's name (:func:`label_problem`)."""

    def check(value: str) -> str:
        problem = label_problem(value)
        if problem:
            raise ValueError(f"{name} {problem}")
        return value

    return AfterValidator(check)


# The caller's own name for itself; the history stores it after the token's name, in
# parentheses (token:<name> (<label>)): a parenthesis in it is refused (422).
Actor = Annotated[StrictStr, _STRIPPED, _text("actor", MAX_LABEL_CHARS), _label("actor")]
# The phase a step expects to leave (unistatus.migration.phase_from); absent: any.
FromPhase = Annotated[StrictInt | None, Field(ge=0, le=4)]
StatusText = Annotated[StrictStr, _STRIPPED, _text("status", 64)]
EntityId = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=64,
        description=(
            "A UTX id (UTX + a system digit 1-3, or 9 born unified, + 14 digits) "
            "or a legacy reference like cashout:123"
        ),
    ),
]


def _check_metadata(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The library's metadata rule (:func:`unistatus.domain.inputs.check_metadata`), as a 422."""
    try:
        return check_metadata(value)
    except errors.InputError as exc:
        raise ValueError(str(exc)) from None


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransactionCreate(_Input):
    transaction_type: UnifiedTransactionType
    user_id: StrictInt = Field(gt=0, le=MAX_BIGINT)
    amount: StrictStr = Field(
        pattern=r"^[0-9]{1,12}(\.[0-9]{1,8})?$",
        description='A positive decimal as a string (exact money, no floats), e.g. "10.50"',
        examples=["10.50"],
    )
    currency: StrictStr = Field(pattern=r"^[A-Z][A-Z0-9]{2,9}$", examples=["USD"])
    legacy_entity_id: StrictInt | None = Field(default=None, gt=0, le=MAX_LEGACY_ID)
    status: StatusText | None = None
    metadata: dict[str, Any] | None = None
    triggered_by: Actor | None = Field(
        default=None,
        description="The caller's label, recorded after the token's name (no parentheses)",
    )

    _meta = field_validator("metadata")(_check_metadata)


class StatusUpdate(_Input):
    status: StatusText = Field(description="A unified status, or a legacy status of its system")
    reason: Reason
    triggered_by: Actor | None = Field(
        default=None,
        description="The caller's label, recorded after the token's name (no parentheses)",
    )
    metadata: dict[str, Any] | None = None
    force: StrictBool = Field(
        default=False, description="Admin override of the transition rules (admin token only)"
    )

    _meta = field_validator("metadata")(_check_metadata)


class ModeChange(_Input):
    mode: DualWriteMode
    # One legacy system (CASHOUT, ESCROW, EXCHANGE); absent: every system.
    system: LegacySystemType | None = None
    reason: Reason
    # Enter a unified-read mode although unified may be stale, or a mode that writes
    # unified although the capture's triggers are stale (409 without it).
    force: StrictBool = False
    actor: Actor = "api"


class PhaseAdvance(_Input):
    reason: Reason  # required, like every control change (recorded with the actor)
    # One legacy system, its gates on its own data; absent: every system (in one phase).
    system: LegacySystemType | None = None
    force: StrictBool = False
    actor: Actor = "api"
    # Only from this phase (409 otherwise, nothing changed): a retried step moves one.
    from_phase: FromPhase = None


class ReasonedAction(_Input):
    reason: Reason
    actor: Actor = "api"


class PhaseRollback(ReasonedAction):
    # One legacy system, by its own phase's procedure; absent: every system (in one phase).
    system: LegacySystemType | None = None
    # Only from this phase (409 otherwise, nothing changed): a retried step moves one.
    from_phase: FromPhase = None


class EmergencyRollback(ReasonedAction):
    # One legacy system (CASHOUT, ESCROW, EXCHANGE); absent: every system.
    system: LegacySystemType | None = None


class ValidationIssue(BaseModel):
    """One of a request's schema errors, as a 422 lists them."""

    type: str | None = Field(description="the kind of error (missing, int_parsing, ...)")
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str | None = Field(description="what is wrong, in words")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str | list[ValidationIssue] = Field(
        description="what was refused and why: words, or a 422's schema errors (at most "
        "20; the rest counted in errors_not_listed)"
    )
    error: str = Field(
        description="the error's name: unistatus's own (InvalidTransitionError, "
        "InputError, StorageError, ...), or the HTTP layer's (AuthenticationError, "
        "PermissionError, NotFoundError, MethodNotAllowedError)"
    )
    error_id: str | None = Field(
        None, description="a 503's entry in the service log, which has the database's words"
    )
    errors_not_listed: int | None = Field(
        None, description="a 422's schema errors beyond those listed in detail"
    )
    result: dict[str, Any] | None = Field(
        None,
        description="a write that failed: its result (outcome_unknown says whether it may "
        "have committed; repeat it with the same Idempotency-Key)",
    )
