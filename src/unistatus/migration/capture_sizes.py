"""A capture statement in one copy per size of the statement that fired it (PostgreSQL).

An UPDATE's statement joins its old rows to its new ones (two transition tables, no
index). PL/pgSQL plans a statement once per session and keeps the plan, made for the
row counts of the first statement that ran it: a session whose first captured UPDATE
was of one row kept a nested loop, and a later bulk UPDATE on that connection (a pooled
one, a cron job's) compared each of its rows with every other (20,000 rows: 36-42 s
instead of 0.7 s; found by a review). Each size class runs its own copy of the
statements, so each keeps a plan made for a statement of its size: at most 1,000 x
1,000 comparisons where a plan of the middle class is a nested loop, none in the bulk
class (planned from over 1,000 rows).
"""

from __future__ import annotations

__all__ = ["SIZE_CLASSES", "by_size"]

# The most rows of each class but the last (which takes the rest).
SIZE_CLASSES = (1, 1000)


def by_size(rows: str, *parts: str) -> str:
    """``parts`` (PL/pgSQL statements reading the transition table ``rows`` and its
    partner) once per size class of ``rows`` (:data:`SIZE_CLASSES`)."""
    body = "\n".join(parts)
    count = f"(SELECT count(*) FROM {rows})"
    branches = [
        f"{'IF' if i == 0 else 'ELSIF'} {count} <= {most} THEN\n{_indented(body)}"
        for i, most in enumerate(SIZE_CLASSES)
    ]
    return "\n".join([*branches, f"ELSE\n{_indented(body)}", "END IF;"])


def _indented(text: str) -> str:
    return "\n".join("    " + line if line else line for line in text.splitlines())
