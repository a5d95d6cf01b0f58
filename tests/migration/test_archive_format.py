"""The archive's line encoding: the per-column encoder the export uses writes the same
bytes as encoding each value by its kind (the format), for every kind."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from unistatus.migration.archive_format import decode, encode, row_encoder, row_line

KINDS = [
    ("integer", False),
    ("boolean", False),
    ("float", False),
    ("decimal", False),
    ("datetime", False),
    ("datetime", True),
    ("date", False),
    ("binary", False),
    ("json", False),
    ("string", False),
]

values = st.tuples(
    st.none() | st.integers(),
    st.none() | st.booleans(),
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
    st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.none() | st.datetimes(),
    st.none() | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.none() | st.dates(),
    st.none() | st.binary(max_size=20),
    st.none() | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.none() | st.text(max_size=30),
)


@given(values)
def test_the_row_encoder_writes_the_formats_bytes(row: tuple[object, ...]) -> None:
    by_kind = row_line([encode(k, v, timezone=tz) for (k, tz), v in zip(KINDS, row, strict=True)])
    assert row_encoder(KINDS)(row) == by_kind


def test_a_line_reads_back_exactly() -> None:
    row = (
        7,
        True,
        0.1,
        Decimal("12.3400"),
        datetime(2026, 1, 2, 3, 4, 5, 6),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        date(2026, 1, 2),
        b"\x00\xff",
        {"a": 1},
        'é\n"',
    )
    import json

    line = row_encoder(KINDS)(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = [decode(k, v) for (k, _), v in zip(KINDS, json.loads(line), strict=True)]
    assert back[:5] == list(row[:5]) and back[6:] == list(row[6:])
    assert back[5] == row[5]  # the same instant
