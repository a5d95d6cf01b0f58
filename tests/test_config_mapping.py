"""The config's extra legacy values (``[mapping.CASHOUT]``): checked when the settings
load, registered for the process once they are valid, a clear ConfigError otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from unistatus.config import CONFIG_FILE_ENV, Settings, load_settings
from unistatus.domain.mapping import LegacyStatusMapper, extra_statuses
from unistatus.domain.statuses import LegacySystemType
from unistatus.domain.statuses import UnifiedTransactionStatus as U
from unistatus.errors import ConfigError

C = LegacySystemType.CASHOUT
NONE = {s: {} for s in LegacySystemType}


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "unistatus.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))


def test_the_toml_table_is_registered_when_the_settings_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path, monkeypatch, '[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\n')
    assert LegacyStatusMapper().try_to_unified(C, "REFUND_REQUESTED") is None
    settings = load_settings()
    assert settings.mapping == {"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
    assert LegacyStatusMapper().to_unified(C, "REFUND_REQUESTED") is U.CANCELLED
    # Loading again (every command, every adapter does) changes nothing.
    load_settings()
    assert extra_statuses()[C] == {"REFUND_REQUESTED": "CANCELLED"}


def test_systems_are_spelled_as_in_legacy_tables_and_json_env_keeps_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNISTATUS_MAPPING", '{"escrows": {"ON_HOLD": "DISPUTED"}}')
    assert load_settings().mapping == {"ESCROW": {"ON_HOLD": "DISPUTED"}}
    assert extra_statuses()[LegacySystemType.ESCROW] == {"ON_HOLD": "DISPUTED"}


def test_a_worker_rebuilding_its_settings_from_a_dump_registers_the_same_values() -> None:
    # The backfill's worker processes get settings.model_dump() (spawn: a fresh process).
    settings = load_settings(mapping={"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}})
    again = Settings(**settings.model_dump())
    assert again.mapping == settings.mapping


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[mapping.CASHOUT]\nREFUND_REQUESTED = "REFUNDED"\n',
            "invalid setting mapping: CASHOUT.REFUND_REQUESTED: unknown unified status 'REFUNDED'",
        ),
        (
            '[mapping.CASHOUT]\nCANCELLED = "FAILED"\n',
            "CASHOUT.CANCELLED: CANCELLED is already a legacy value of CASHOUT, mapped to "
            "CANCELLED by the built-in mapping",
        ),
        (
            '[mapping.CASHOUT]\nREFUND_REQUESTED = "CANCELLED"\nREFUND_REQUESTED = "FAILED"\n',
            "not valid TOML: Cannot overwrite a value",
        ),
        (
            '[mapping.CASHOUT]\nX = "CANCELLED"\n[mapping.cashouts]\nX = "FAILED"\n',
            "CASHOUT.X is mapped twice",
        ),
        (
            '[mapping.CASHOUT]\nrefund_requested = "CANCELLED"\n',
            "CASHOUT.refund_requested: the legacy value 'refund_requested' is not upper case",
        ),
        ('[mapping.PAYROLL]\nX = "CANCELLED"\n', "unknown legacy system 'PAYROLL'"),
        ('[mapping.ESCROW]\nON_HOLD = "OTP_PENDING"\n', "not a status of ESCROW transactions"),
        ("[mapping.CASHOUT]\nX = 3\n", "invalid setting mapping.CASHOUT.X"),
    ],
)
def test_a_bad_mapping_is_a_clear_error_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    _config(tmp_path, monkeypatch, toml)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert extra_statuses() == NONE


def test_two_configurations_that_disagree_cannot_share_a_process() -> None:
    load_settings(mapping={"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}})
    with pytest.raises(ConfigError, match="already mapped to CANCELLED in this process"):
        load_settings(mapping={"CASHOUT": {"REFUND_REQUESTED": "FAILED"}})
    assert extra_statuses()[C] == {"REFUND_REQUESTED": "CANCELLED"}


def test_settings_invalid_elsewhere_register_nothing() -> None:
    with pytest.raises(ConfigError, match="fallback"):
        load_settings(fallback="sometimes", mapping={"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}})
    assert extra_statuses() == NONE


def test_the_readme_config_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("# unistatus.toml  (UNISTATUS_CONFIG=unistatus.toml)\n", 1)[1]
    _config(tmp_path, monkeypatch, example.split("```", 1)[0])
    settings = load_settings()
    assert settings.legacy_tables["EXCHANGE"].table == "fx_orders"
    assert settings.mapping == {"CASHOUT": {"REFUND_REQUESTED": "CANCELLED"}}
