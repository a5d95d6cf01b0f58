"""The transaction endpoints: create, read a status, change a status.

Reads are open; writes need a writer or admin token (:mod:`unistatus.api.auth`), and
``force`` an admin token. The history names the token that made a change
(``token:<name>``, with the caller's ``triggered_by`` as a label), and an
``Idempotency-Key`` belongs to the token that sent it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse

from unistatus import errors
from unistatus.api.access import Principal, actor_for
from unistatus.api.auth import Writer
from unistatus.api.error_responses import error_answers, queued_for_repair, unavailable
from unistatus.api.models import EntityId, StatusUpdate, TransactionCreate
from unistatus.api.state import ServiceState
from unistatus.domain.inputs import check_key

__all__ = ["HTTP_KEY_LENGTH", "add_transaction_routes"]


def _write_result(result: Any, created: bool = False) -> JSONResponse:
    """A DualWriteResult as the client sees it: its ``error`` (the database's words) is
    in the service log only, under the ``error_id`` the body gives."""
    data = result.as_dict()
    if not result.overall_success:
        # The database refused the write after retries: a server-side failure.
        return unavailable("StorageError", f"write failed: {result.error}", result=data)
    if result.error is not None:
        data = queued_for_repair(data, f"{result.entity_id}: {result.error}")
    return JSONResponse(data, status_code=201 if created and result.changed else 200)


# The stored key is "<token name>:<key>" (names have at most 32 characters), so two
# clients with different tokens never see each other's transactions through a key.
HTTP_KEY_LENGTH = 200


def _scoped_key(who: Principal, key: str | None) -> str | None:
    """The key as stored: the token's name before it (another token's key is another
    key), within what the stored key may hold."""
    return None if key is None else f"{who.name}:{check_key(key, HTTP_KEY_LENGTH)}"


def _one_key(request: Request) -> str | None:
    """The request's key (None: none sent). Refused when it carries two different ones:
    the header twice, or two joined by a proxy (RFC 9110 joins repeated fields with
    ','): taking one of them made a retry carrying the other a second transaction. The
    same key repeated (a proxy duplicating the header) is that key."""
    sent = request.headers.getlist("idempotency-key")
    if len(sent) == 1 and "," not in sent[0]:
        return sent[0]  # as sent: check_key judges it (a blank at either end refused)
    keys = {key.strip() for value in sent for key in value.split(",")}
    if len(keys) > 1:
        raise errors.InputError(
            f"send one Idempotency-Key, got {', '.join(sent)!r}"[:300]
            + " (a key holds no ',': a proxy joins repeated headers with one)"
        )
    return keys.pop() if keys else None


def _sent_key(
    request: Request,
    header: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat the request with the same key to get its first result "
            "back instead of a second transaction (e.g. after a 503 whose result says "
            "outcome_unknown); the same key with another body is refused (422), "
            "triggered_by aside (a label of the sender; the first call's is kept). Keys "
            f"are printable ASCII without ',', at most {HTTP_KEY_LENGTH} characters, sent "
            "once (two keys are refused, 422), and belong to "
            "the token that sent them: another token's key is another key.",
            # Stated in the schema, checked by check_key (its words in the 422).
            json_schema_extra={
                "minLength": 1,
                "maxLength": HTTP_KEY_LENGTH,
                "pattern": r"^[!-+\--~]([ -+\--~]*[!-+\--~])?$",
            },
        ),
    ] = None,
) -> str | None:
    """The Idempotency-Key as :func:`_one_key` reads it from every header sent;
    ``header`` (the first one only) declares it in the OpenAPI schema."""
    return _one_key(request)


@contextmanager
def _keys_as_sent(scoped: str | None, key: str | None) -> Iterator[None]:
    """A refusal that names the key as stored names it as the client sent it."""
    try:
        yield
    except errors.InputError as exc:
        if scoped is None or repr(scoped) not in str(exc):
            raise
        raise errors.InputError(str(exc).replace(repr(scoped), repr(key))) from None


def add_transaction_routes(app: FastAPI, service: ServiceState) -> None:
    @app.post(
        "/api/v1/transactions",
        tags=["transactions"],
        status_code=201,
        responses={
            200: {
                "description": "No new transaction: the first result of an Idempotency-Key "
                "sent before, or a legacy row linked that had its unified row already."
            },
            **error_answers(400, 401, 403, 409, 413, 415, 422, 503),
        },
    )
    def create_transaction(
        body: TransactionCreate,
        who: Writer,
        idempotency_key: Annotated[str | None, Depends(_sent_key)],
    ) -> JSONResponse:
        """Create a transaction on the sides the current mode writes (or link a legacy row).

        Needs a writer or admin token (``Authorization: Bearer <token>``).
        """
        scoped = _scoped_key(who, idempotency_key)
        with _keys_as_sent(scoped, idempotency_key):
            result = service.adapter().create_transaction(
                body.transaction_type,
                body.user_id,
                body.amount,
                body.currency,
                legacy_entity_id=body.legacy_entity_id,
                status=body.status,
                metadata=body.metadata,
                idempotency_key=scoped,
                triggered_by=actor_for(who, body.triggered_by),
            )
        return _write_result(result, created=True)

    @app.get(
        "/api/v1/transactions/{entity_id}",
        tags=["transactions"],
        responses=error_answers(404, 422, 503),
    )
    def get_transaction(entity_id: EntityId) -> dict[str, Any]:
        """The status from the authoritative side (``source`` says which)."""
        status, meta = service.adapter().get_transaction_status(entity_id)
        if status is None and meta.get("source") is None:
            raise errors.EntityNotFoundError(entity_id)
        return {"id": entity_id, "status": status.value if status else None, **meta}

    @app.post(
        "/api/v1/transactions/{entity_id}/status",
        tags=["transactions"],
        responses=error_answers(400, 401, 403, 404, 409, 413, 415, 422, 503),
    )
    def update_status(entity_id: EntityId, body: StatusUpdate, who: Writer) -> JSONResponse:
        """Change the status (unified or legacy value); refused transitions are 409.

        Needs a writer or admin token; ``force`` (the override) needs an admin token.
        """
        if body.force and not who.may("admin"):
            raise HTTPException(
                403,
                f"force (the admin override of the transition rules) needs an admin token; "
                f"the token {who.name!r} is a {who.role} token",
            )
        result = service.adapter().update_status(
            entity_id,
            body.status,
            body.reason,
            actor_for(who, body.triggered_by),
            metadata=body.metadata,
            force=body.force,
        )
        return _write_result(result)
