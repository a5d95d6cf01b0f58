"""Settings: environment (UNISTATUS_*), an optional TOML file, then defaults.

A real deployment describes its own legacy tables here; the names are checked against
the live database (see :mod:`unistatus.db.legacy`) before any SQL uses them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from unistatus.config_file import read_config_file, spelled_twice
from unistatus.config_sources import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    source_of,
    unknown_keys,
    variable_of,
)
from unistatus.config_values import check_own_schema, check_webhook_url
from unistatus.domain.inputs import is_header_text
from unistatus.domain.mapping import check_extra_statuses, register_extra_statuses
from unistatus.errors import ConfigError
from unistatus.redact import redact, redact_webhook

log = logging.getLogger("unistatus.config")

DEFAULT_DATABASE_URL = "sqlite:///unistatus.db"
# A directory of one file per secret setting, named as its variable (Docker's and
# Kubernetes' secrets: /run/secrets/unistatus_admin_token), below the variables.
SECRETS_DIR_ENV = "UNISTATUS_SECRETS_DIR"
# Variables with the settings' prefix that are no setting: the config file's name, and
# what the test suite reads (tests/conftest.py, tests/migration/test_capture_concurrency.py).
OTHER_VARIABLES = frozenset(
    {
        CONFIG_FILE_ENV,
        SECRETS_DIR_ENV,
        "UNISTATUS_TEST_POSTGRES_URL",
        "UNISTATUS_CAPTURE_STRESS_ROWS",
    }
)
# An unknown UNISTATUS_ variable at least this close to a setting's name (difflib's
# ratio) is taken for a misspelling and refused: UNISTATUS_SHEMA (0.91) would leave the
# schema public, in another installation's tables. Others are only warned of: a
# Kubernetes Service named "unistatus" gives its namespace's pods UNISTATUS_SERVICE_HOST,
# UNISTATUS_PORT, ... (0.5 at most), and refusing those would stop the service starting.
_MISSPELT = 0.8
# Where unistatus's own tables live on PostgreSQL. "public" (the default, and what every
# installation made before the setting existed has) keeps their names unqualified, as
# they always were; any other name is a schema of their own (unistatus.db.binding).
DEFAULT_SCHEMA = "public"
# A PostgreSQL engine's pool unless the settings say otherwise (pool_size, max_overflow).
DEFAULT_POOL_SIZE = 20
DEFAULT_MAX_OVERFLOW = 40

# Pydantic warns that a field named ``schema`` shadows BaseModel.schema (its deprecated
# v1 JSON-schema method, which nothing here calls); ``schema`` is the setting's name in
# the config file and the environment (UNISTATUS_SCHEMA), so the field keeps it.
warnings.filterwarnings(
    "ignore",
    message=r'Field name "schema" in "(Settings|LegacyTableSpec)" shadows',
    category=UserWarning,
    module=r"unistatus\.config\Z",  # this module's classes only, not the application's
)


# A key no setting reads is refused, in the file's tables as at its top: a misspelt
# `rollback_on_latancy = false` left the automated rollback on, with no word said. No
# setting is infinite or NaN: an infinite soak or limit is never reached, and NaN passed
# every bound it was not compared with (a webhook timeout of NaN failed every delivery).
_NESTED = ConfigDict(extra="forbid", allow_inf_nan=False)
# The largest value of a PostgreSQL integer setting (statement_timeout, lock_timeout: ms).
PG_INT_MAX = 2_147_483_647


class LegacyTableSpec(BaseModel):
    """Where one legacy system keeps its rows, and what its columns are called."""

    model_config = _NESTED

    table: str = Field(min_length=1)
    # The schema the application keeps the table in; None: wherever the table's bare name
    # resolves (the connection's search_path, as the application itself names it).
    schema: str | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    id: str = "id"
    status: str = "status"
    user_id: str = "user_id"
    amount: str = "amount"
    currency: str = "currency"
    created_at: str = "created_at"
    updated_at: str = "updated_at"

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:  # no SQL name holds one (a DataError, later)
            raise ValueError("a name with a NUL character")
        return v

    def column_names(self) -> dict[str, str]:
        return self.model_dump(exclude={"table", "schema"})


def _default_legacy_tables() -> dict[str, LegacyTableSpec]:
    return {
        "CASHOUT": LegacyTableSpec(table="cashouts"),
        "ESCROW": LegacyTableSpec(table="escrows"),
        "EXCHANGE": LegacyTableSpec(table="exchanges"),
    }


class AutoResponses(BaseModel):
    """Automated responses to alerts; each can be switched off."""

    model_config = _NESTED

    rollback_on_critical_consistency: bool = True
    repair_on_consistency_warning: bool = True
    rollback_on_latency: bool = True


class BackfillSettings(BaseModel):
    """How the backfill sizes its batches and when it holds back (docs/backfill.md).

    Each is the default a running backfill starts from; ``unistatus backfill tune``
    changes a running one through the database (unistatus.backfill.control).
    """

    model_config = _NESTED

    # Batches sized so that one takes about this long (ms); 0: every batch is
    # --batch-size rows (fixed). Sizes stay within [min, max] rows.
    target_batch_ms: float = Field(default=200.0, ge=0.0, le=600_000.0)
    min_batch_rows: int = Field(default=1_000, ge=1)
    max_batch_rows: int = Field(default=100_000, ge=1)
    # Worker threads sharing the chunks, one connection each (PostgreSQL; SQLite runs
    # one). Two by default: one connection spends part of its time between batches
    # (commit, checkpoint, sizing) and the process's start-up, a second copies meanwhile
    # (bench/commands.py, BENCHMARKS.md). The second and later wait while the adapter
    # serves live traffic; the throttle below holds every worker back.
    workers: int = Field(default=2, ge=1, le=64)
    # Hold back while the adapter's p95 (every process's, over the last
    # p95_window_seconds, from at least p95_min_operations operations) is above
    # max_p95_ms, or above p95_over_baseline times its p95 before the backfill started.
    max_p95_ms: float | None = Field(default=None, gt=0.0)
    p95_over_baseline: float | None = Field(default=1.2, ge=1.0)
    p95_window_seconds: float = Field(default=15.0, gt=0.0, le=3600.0)
    p95_min_operations: int = Field(default=20, ge=1)
    # PostgreSQL: hold back while a replica's replay lag is above this (None: never).
    max_replication_lag_seconds: float | None = Field(default=10.0, gt=0.0)
    # PostgreSQL: hold back while more than this many sessions wait for a lock on the
    # legacy tables or unified_transactions (None: never).
    max_lock_waits: int | None = Field(default=2, ge=0)
    # How often the health is read (between batches) and re-read while held back.
    health_interval_seconds: float = Field(default=1.0, gt=0.0, le=60.0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> BackfillSettings:
        if self.min_batch_rows > self.max_batch_rows:
            raise ValueError(
                f"min_batch_rows ({self.min_batch_rows}) is above max_batch_rows "
                f"({self.max_batch_rows})"
            )
        return self


class RetentionSettings(BaseModel):
    """How long the monitor keeps what grows with traffic, in days (0: forever; at most
    100 years).

    unistatus.observe.retention: idempotency keys (a deleted key is new again) and the
    reports of continuous verification (the newest is always kept).
    """

    model_config = _NESTED

    idempotency_keys_days: float = Field(default=30.0, ge=0.0, le=36_500.0)
    verification_reports_days: float = Field(default=7.0, ge=0.0, le=36_500.0)


class NetworkSettings(BaseModel):
    """Client-side bounds of unistatus's own PostgreSQL connections (libpq parameters,
    unistatus.db.network): the server-side timeouts cannot fire while a request never
    reaches the server (a black-holed link, a peer gone without a reset). A value the
    database URL's query string sets stands; 0 leaves libpq's (no bound).
    """

    model_config = _NESTED

    # Connecting, the startup handshake included (libpq's connect_timeout).
    connect_timeout_seconds: int = Field(default=10, ge=0, le=3600)
    # TCP keepalives: the first probe after this much silence, then one every interval;
    # the connection is dropped after count unanswered (a host or route gone).
    keepalives_idle_seconds: int = Field(default=30, ge=0, le=32_767)
    keepalives_interval_seconds: int = Field(default=10, ge=0, le=32_767)
    keepalives_count: int = Field(default=3, ge=0, le=127)
    # Data sent but not acknowledged this long drops the connection (Linux only).
    tcp_user_timeout_ms: int = Field(default=30_000, ge=0, le=PG_INT_MAX)


class ApiToken(BaseModel):
    """A named bearer token of the HTTP API.

    ``role``: ``writer`` may create transactions and change statuses; ``admin`` may also
    use ``force`` (the override of the transition rules) and the control endpoints. The
    history records the token's ``name``, never its value.
    """

    model_config = _NESTED

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
    token: str = Field(min_length=1, repr=False)
    role: Literal["writer", "admin"] = "writer"


class Settings(BaseSettings):
    # An empty variable (`UNISTATUS_WRITE_CONCURRENCY=`) means "not set", as in shells
    # and compose files, rather than an invalid value. extra="forbid": an unknown key of
    # the file or keyword is refused; an unknown variable is never seen by pydantic-settings
    # (its environment source reads only the settings' own), so check_variables does it.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        allow_inf_nan=False,
    )

    database_url: str = DEFAULT_DATABASE_URL
    # PostgreSQL: the schema of unistatus's own tables (see DEFAULT_SCHEMA); SQLite has
    # none, and refuses any other value (unistatus.db.binding.bind_schema).
    schema: str = DEFAULT_SCHEMA  # type: ignore[assignment]
    legacy_tables: dict[str, LegacyTableSpec] = Field(default_factory=_default_legacy_tables)
    fallback: Literal["strict", "primary_wins"] = "strict"
    shadow_read_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    mode_refresh_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    # Transactions whose last write this adapter made, kept so the next change to them
    # is one round trip (PostgreSQL; checked by the write itself). 0 turns it off.
    state_cache_size: int = Field(default=10_000, ge=0, le=10_000_000)
    # Writes of one adapter (process) in flight at once; the rest queue, first come
    # first served. None: the backend's default (PostgreSQL 4, SQLite 1); 0: no limit.
    write_concurrency: int | None = Field(default=None, ge=0, le=10_000)
    write_queue_timeout_seconds: float = Field(default=30.0, gt=0.0, le=3600.0)
    # Each PostgreSQL engine's pool (the adapter's, serve's, a command's): connections
    # kept open, and how many more it may open under load; at most their sum at once.
    # What each process opens in all: docs/scaling.md ("Connections").
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=10_000)
    max_overflow: int = Field(default=DEFAULT_MAX_OVERFLOW, ge=0, le=10_000)
    # Every adapter records its operation statistics (unistatus.adapter.stats), flushed
    # every stats_flush_seconds; false: nothing recorded (gates then lack the figures).
    record_stats: bool = True
    stats_flush_seconds: float = Field(default=5.0, gt=0.0, le=300.0)
    # Sent to PostgreSQL as settings: beyond PG_INT_MAX it refuses them, mid-backfill.
    statement_timeout_ms: int = Field(default=30_000, ge=0, le=PG_INT_MAX)
    lock_timeout_ms: int = Field(default=5_000, ge=0, le=PG_INT_MAX)
    # Each lock wait of /health's reads (each statement: twice it; PostgreSQL), and of
    # /metrics' and /api/v1/status's (their statements unbounded): a probe
    # held up behind a lock answers degraded within a few of these instead of waiting as
    # long as the lock is held (Kubernetes' probe gives up after 1 s by default). 0: none.
    health_timeout_ms: int = Field(default=300, ge=0, le=PG_INT_MAX)
    # Server-side prepared statements on PostgreSQL: None (unset) as found at connect,
    # on unless the server is reached through a connection pooler (PgBouncer before
    # 1.21 cannot keep them); true or false as said (unistatus.db.connection_setup).
    prepared_statements: bool | None = None
    # Commands whose answer counts rows refuse where row-level security may hide rows from
    # the role (unistatus.db.row_security); false: an operator verified it sees them all.
    row_security_check: bool = True
    # How long a mode switch (mode set, phase advance) waits for the exclusive mode lock
    # behind writers' open transactions before it gives up (unistatus.db.mode_lock_wait);
    # and how long a retirement, its undo and `capture enable` wait for the tables they
    # change behind other sessions' transactions (unistatus.db.ddl_wait).
    mode_lock_wait_seconds: float = Field(default=60.0, gt=0.0, le=3600.0)
    # Each lock wait of one attempt at a schema change (a migration, a retirement, the
    # capture's triggers; lock_timeout_ms if smaller): every writer of the table queues
    # behind the waiting DDL, so it waits little, and tries again after a pause.
    ddl_lock_timeout_ms: int = Field(default=500, ge=1, le=PG_INT_MAX)
    # The memory a check range's statement may give its hash tables (PostgreSQL's
    # work_mem, for that transaction only); 0: the server's own setting.
    check_work_mem_mb: int = Field(default=64, ge=0, le=65_536)
    # NoDecode: the env value is a comma-separated list, not JSON (split below).
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Each delivery's, at most 5 minutes (a few retries follow a failed one); a negative
    # or NaN one failed every delivery ("Timeout value out of range"), found at an alert.
    webhook_timeout_seconds: float = Field(default=5.0, gt=0.0, le=300.0)
    # Bearer tokens of the HTTP API (see ApiToken and unistatus.api.access): the admin token
    # (named "admin"), the writer token (named "writer"), and any number of named ones.
    admin_token: str | None = Field(default=None, repr=False)
    writer_token: str | None = Field(default=None, repr=False)
    api_tokens: list[ApiToken] = Field(default_factory=list, repr=False, validate_default=True)
    # The largest request body the HTTP API takes; a larger one is refused (413) before
    # it is read whole (unistatus.api.body_limit).
    max_request_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    soak_seconds: float = Field(default=3600.0, ge=0.0)
    # The p95 gate into phase 4 judges only unified primary's own operations, and no
    # fewer than this many: a p95 of a handful of operations says nothing.
    p95_gate_min_operations: int = Field(default=1000, ge=1)
    auto_responses: AutoResponses = Field(default_factory=AutoResponses)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    # Legacy values beyond the 38, per system (TOML [mapping.CASHOUT] REFUND_REQUESTED =
    # "CANCELLED"): checked here, registered for this process once the settings are valid
    # (docs/status-model.md, "Extra legacy values").
    mapping: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("schema")
    @classmethod
    def _plain_schema(cls, v: str) -> str:
        return check_own_schema(v)

    @field_validator("legacy_tables", mode="before")
    @classmethod
    def _one_system_from_each_source(cls, v: Any) -> Any:
        """A system's keys from the sources together, one spelling each, the variables'
        over the file's (``UNISTATUS_LEGACY_TABLES__CASHOUT__TABLE`` comes lower case
        beside the file's ``[legacy_tables.CASHOUT]``). Two spellings in one file are
        refused when it is read (:mod:`unistatus.config_file`)."""
        if not isinstance(v, dict):
            return v
        merged: dict[Any, Any] = {}
        spelled: dict[Any, Any] = {}  # each system under its first spelling (the file's):
        for key, spec in v.items():  # refusals then name the key as it was written
            name = spelled.setdefault(key.strip().upper() if isinstance(key, str) else key, key)
            if isinstance(merged.get(name), dict) and isinstance(spec, dict):
                merged[name] = {**merged[name], **spec}
            else:
                merged[name] = spec
        return merged

    @field_validator("legacy_tables")
    @classmethod
    def _known_systems(cls, v: dict[str, LegacyTableSpec]) -> dict[str, LegacyTableSpec]:
        merged = _default_legacy_tables()
        for key, spec in v.items():
            system = key.strip().upper()
            if system not in merged:
                raise ValueError(f"unknown legacy system {key!r} (cashout, escrow, exchange)")
            merged[system] = spec
        return merged

    @field_validator("api_tokens")
    @classmethod
    def _distinct_tokens(cls, v: list[ApiToken], info: ValidationInfo) -> list[ApiToken]:
        """Names and values apart, every value fit for a header: all said of api_tokens,
        the setting that holds them all (admin_token and writer_token are checked first,
        declared before it; api_tokens is checked when not given too: validate_default)."""
        names = [t.name for t in v]
        for reserved in ("admin", "writer"):
            if reserved in names:
                raise ValueError(
                    f"the token name {reserved!r} is taken by UNISTATUS_{reserved.upper()}_TOKEN"
                )
        if len(set(names)) != len(names):
            raise ValueError("two API tokens have the same name")
        values = [info.data.get(f) for f in ("admin_token", "writer_token")]
        values = [t for t in values if t] + [t.token for t in v]
        if any(not is_header_text(t, spaces=False) for t in values):
            raise ValueError(
                "an API token is sent in an HTTP header: printable ASCII without spaces only"
            )
        if len(set(values)) != len(values):
            raise ValueError(
                "the admin token, the writer token and the API tokens must all differ "
                "(a token names one client and one role)"
            )
        return v

    @field_validator("mapping")
    @classmethod
    def _extra_statuses(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        try:
            checked = check_extra_statuses(v)
        except ConfigError as exc:
            raise PydanticCustomError("extra_legacy_status", str(exc)) from None
        return {system.value: values for system, values in checked.items()}

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [u.strip() for u in v.split(",") if u.strip()]
        return v

    @field_validator("webhook_urls")
    @classmethod
    def _webhooks_reachable(cls, v: list[str]) -> list[str]:
        return [check_webhook_url(url) for url in v]

    def __repr_args__(self) -> Any:
        """As pydantic shows it, the database password and webhooks' secrets hidden."""
        for name, value in super().__repr_args__():
            if name == "database_url":
                yield name, redact(value)
            elif name == "webhook_urls":
                yield name, [redact_webhook(url) for url in value]
            else:
                yield name, value

    @model_validator(mode="after")
    def _register_extra_statuses(self) -> Settings:
        """Last: only settings valid in every other respect put their mapping in force."""
        try:
            register_extra_statuses(self.mapping)
        except ConfigError as exc:
            raise ConfigError(f"invalid setting mapping: {exc}") from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets = os.environ.get(SECRETS_DIR_ENV)
        if secrets:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets))
        path = os.environ.get(CONFIG_FILE_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Settings from overrides, env and the optional TOML file; ConfigError when invalid."""
    path = os.environ.get(CONFIG_FILE_ENV)
    if path:
        read_config_file(CONFIG_FILE_ENV, path)
    secrets = os.environ.get(SECRETS_DIR_ENV)
    if secrets and not Path(secrets).is_dir():
        raise ConfigError(f"{SECRETS_DIR_ENV}={secrets}: no such directory")
    check_variables(os.environ)
    clean = {k: v for k, v in overrides.items() if v is not None}
    twice = spelled_twice(clean.get("legacy_tables"))
    if twice is not None:
        raise ConfigError(f"invalid setting legacy_tables: {twice}")
    variable = f"{ENV_PREFIX}LEGACY_TABLES"
    with contextlib.suppress(ValueError):  # not JSON: refused as such by the settings
        twice = spelled_twice(json.loads(os.environ.get(variable) or "{}"))
    if twice is not None:
        raise ConfigError(f"{variable}: invalid setting legacy_tables: {twice}")
    try:
        return Settings(**clean)
    except tomllib.TOMLDecodeError as exc:
        # A key given twice ([mapping.CASHOUT] with one value mapped twice) lands here too.
        raise ConfigError(f"{CONFIG_FILE_ENV}={path}: not valid TOML: {exc}") from None
    except SettingsError as exc:
        raise ConfigError(_unparsed(exc)) from None
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:
            raise ConfigError(unknown_keys(Settings, unknown, path, clean)) from None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        # "Value error, ": pydantic's word for a ValueError raised by a validator.
        message = first["msg"].removeprefix("Value error, ")
        source = source_of(tuple(first["loc"]), path, clean)
        raise ConfigError(f"{source}invalid setting {where}: {message}") from None


def _unparsed(exc: SettingsError) -> str:
    """A value a source could not parse (a variable's JSON), said as a setting's error.

    pydantic-settings names the field only in its message; the JSON error is the cause
    (its position, never the value: it may be a token)."""
    found = re.search(r'field "(\w+)"', str(exc))
    field = found.group(1) if found else "settings"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        variable = variable_of((field,)) or f"{ENV_PREFIX}{field.upper()}"
        return f"invalid setting {field}: {variable} is not valid JSON: {cause}"
    return f"invalid setting {field}: {cause or exc}"


_warned: set[str] = set()  # unknown variables said once per process, not at every load


def check_variables(environ: Mapping[str, str]) -> None:
    """Refuse a UNISTATUS_ variable that misspells a setting; warn once of other unknown
    ones (:data:`_MISSPELT`). Variables without the prefix are none of unistatus's."""
    fields = Settings.model_fields
    misspelt: list[str] = []
    unknown: list[str] = []
    for var in sorted(environ):
        name = var.upper()
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        head, nested, rest = name.removeprefix(ENV_PREFIX).lower().partition("__")
        if head in fields and (not nested or _is_table(fields[head].annotation)):
            continue  # a key unknown within a table is pydantic's to refuse (extra)
        close = difflib.get_close_matches(head, fields, n=1, cutoff=_MISSPELT)
        if close:
            meant = f"{ENV_PREFIX}{close[0]}{nested}{rest}".upper()
            misspelt.append(f"{var}: unknown setting (did you mean {meant}?)")
        else:
            unknown.append(var)
    if misspelt:
        raise ConfigError("; ".join(misspelt))
    new = [var for var in unknown if var not in _warned]
    if new:
        _warned.update(new)
        log.warning(
            "%s: not a setting of unistatus (README.md, Configuration), ignored", ", ".join(new)
        )


def _is_table(annotation: Any) -> bool:
    """A setting made of keys (a model, a dict or a list of them), not one value."""
    model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return model or get_origin(annotation) in (dict, list)
