"""phase per system: each legacy system has its own migration phase.

The control key ``phase.<SYSTEM>`` (``phase.CASHOUT``, ``phase.ESCROW``,
``phase.EXCHANGE``) holds each system's phase, as ``mode.<SYSTEM>`` holds its mode
(revision 0013). A database with the one global ``phase`` gets every system in that
phase (no control-log row: the phase did not change, and when it was entered stays the
logged change of ``phase``). ``phase`` itself stays, as a summary kept by unistatus:
the phase of every system while they agree, absent while they differ.

The downgrade refuses while the systems are in different phases (the global key could
not say which), then drops the per-system keys.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# --- frozen at this revision (unistatus.migration.phases.PHASE_KEY / phase_key).
SYSTEMS = ("CASHOUT", "ESCROW", "EXCHANGE")
PHASE_KEY = "phase"
UTC_TIME = sa.DateTime(timezone=True)


def _control() -> sa.TableClause:
    schema: str | None = context.config.attributes.get("schema")
    return sa.table(
        "unistatus_control",
        sa.column("key", sa.String),
        sa.column("value", sa.String),
        sa.column("updated_at", UTC_TIME),
        sa.column("updated_by", sa.String),
        schema=schema,
    )


def _values(bind: sa.Connection) -> dict[str, str]:
    control = _control()
    keys = [PHASE_KEY, *(f"{PHASE_KEY}.{s}" for s in SYSTEMS)]
    rows = bind.execute(sa.select(control.c.key, control.c.value).where(control.c.key.in_(keys)))
    return {str(k): str(v) for k, v in rows}


def upgrade() -> None:
    bind = op.get_bind()
    values = _values(bind)
    if PHASE_KEY not in values:
        return
    control = _control()
    now = datetime.now(UTC)
    for system in SYSTEMS:
        if f"{PHASE_KEY}.{system}" not in values:
            bind.execute(
                sa.insert(control).values(
                    key=f"{PHASE_KEY}.{system}",
                    value=values[PHASE_KEY],
                    updated_at=now,
                    updated_by="revision 0017",
                )
            )


def downgrade() -> None:
    bind = op.get_bind()
    values = _values(bind)
    phases = {s: values.get(f"{PHASE_KEY}.{s}", "0") for s in SYSTEMS}
    if len(set(phases.values())) > 1:
        refused: type[Exception] = context.config.attributes.get("gate_error", RuntimeError)
        raise refused(
            "the systems are in different phases ("
            + ", ".join(f"{s} {p}" for s, p in phases.items())
            + "): before revision 0017 one phase held for all; bring them to one phase first"
        )
    control = _control()
    bind.execute(sa.delete(control).where(control.c.key.in_([f"{PHASE_KEY}.{s}" for s in SYSTEMS])))
    common = next(iter(phases.values()))
    if PHASE_KEY not in values and common != "0":
        bind.execute(
            sa.insert(control).values(
                key=PHASE_KEY,
                value=common,
                updated_at=datetime.now(UTC),
                updated_by="revision 0017 downgrade",
            )
        )
