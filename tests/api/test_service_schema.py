"""No input produces a 500, and every answer is one the schema declares (its status
code, its body: test_service_contract.py): schemathesis against the app's own OpenAPI
schema.

Runs in-process against the ASGI app with a bounded number of examples per operation,
with the admin token configured and sent, so the control endpoints really run too.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from test_service_contract import CONFORMANCE

from unistatus.api.service import create_app

TOKEN = "schema-test-token"
EXAMPLES_PER_OPERATION = 20


def test_no_input_produces_a_server_error(sqlite_db: Any) -> None:
    app = create_app(sqlite_db.settings.model_copy(update={"admin_token": TOKEN}), sqlite_db.engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    seen: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"},
                checks=[not_a_server_error, *CONFORMANCE],
            )

        run()
        seen.append(operation.label)
    app.state.service.close()  # stop the adapter's stats flusher
    assert "POST /api/v1/transactions/{entity_id}/status" in seen
    assert "PUT /api/v1/control/mode" in seen


def test_the_idempotency_key_s_rules_are_in_the_schema(sqlite_db: Any) -> None:
    """The schema said "a string": a generated client could not know a key's bounds,
    which the service refuses (422) as check_key says (found by a probe)."""
    import re  # noqa: PLC0415

    from unistatus.domain.inputs import is_header_text  # noqa: PLC0415

    app = create_app(sqlite_db.settings, sqlite_db.engine)
    (key,) = app.openapi()["paths"]["/api/v1/transactions"]["post"]["parameters"]
    schema = key["schema"]
    assert (schema["minLength"], schema["maxLength"]) == (1, 200)
    for sample in ("pA-1", "a b", " a", "a ", "a,b", ",", "~", "kä", "a\tb", "!", "\x7f"):
        stated = re.fullmatch(schema["pattern"], sample) is not None
        assert stated == (is_header_text(sample) and "," not in sample), sample
