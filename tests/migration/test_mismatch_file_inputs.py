"""What `repair --from` makes of a file an operator handed it (a probe): a byte-order
mark an editor put first is no content; a gzip'ed file, `-`, and a line naming a key
twice are refused, each saying what it is, before anything is repaired."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from unistatus.domain.statuses import LegacySystemType
from unistatus.errors import InputError
from unistatus.migration.check_out import read_mismatch_keys

LINE = '{"system": "CASHOUT", "legacy_id": 7}\n'


def test_a_byte_order_mark_before_the_first_line_is_no_content(tmp_path: Path) -> None:
    listed = tmp_path / "m.jsonl"
    listed.write_bytes(b"\xef\xbb\xbf" + LINE.encode() + LINE.encode())
    keys = list(read_mismatch_keys(listed))
    assert [(k.system, k.legacy_id) for k in keys] == [(LegacySystemType.CASHOUT, 7)] * 2


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (gzip.compress(LINE.encode()), "gzip-compressed"),
        (b'{"system": "CASHOUT", "legacy_id": 1, "system": "ESCROW"}\n', "'system' given twice"),
    ],
    ids=["gzip", "a key twice"],
)
def test_what_is_no_list_of_keys_is_said(tmp_path: Path, content: bytes, said: str) -> None:
    listed = tmp_path / "m.jsonl"
    listed.write_bytes(content)
    with pytest.raises(InputError, match=said):
        list(read_mismatch_keys(listed))


def test_dash_names_stdin_the_way_that_works() -> None:
    with pytest.raises(InputError, match="/dev/stdin"):
        list(read_mismatch_keys("-"))
