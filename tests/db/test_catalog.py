"""db.catalog lists every table: it imports every ``db/tables_*`` module."""

from __future__ import annotations

import importlib
from pathlib import Path

import sqlalchemy as sa

from unistatus.db import catalog


def test_the_catalog_imports_every_tables_module() -> None:
    here = Path(catalog.__file__).parent
    modules = sorted(p.stem for p in here.glob("tables_*.py"))
    assert modules, "no db/tables_* modules found"
    for name in modules:
        assert hasattr(catalog, name), f"db/catalog.py does not import {name}"
        module = importlib.import_module(f"unistatus.db.{name}")
        owned = {value.name for value in vars(module).values() if isinstance(value, sa.Table)}
        assert owned <= set(catalog.metadata.tables), name
    assert [t.name for t in catalog.all_tables()] == [
        t.name for t in catalog.metadata.sorted_tables
    ]
