"""The package's metadata in today's form: the licence as a PEP 639 SPDX expression
with its file, built by a setuptools that understands it (older ones, or the old table
form, print a deprecation banner on every `pip install -e .`)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_licence_is_an_spdx_expression_with_its_file() -> None:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_the_build_backend_supports_pep_639() -> None:
    build = _pyproject()["build-system"]
    assert isinstance(build, dict)
    (setuptools,) = [r for r in build["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert found and int(found.group(1)) >= 77, setuptools  # license = "SPDX" since 77.0


def test_the_installed_metadata_carries_the_expression() -> None:
    """What `make venv` installed (it reinstalls when pyproject.toml changes)."""
    meta = metadata("unistatus")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None  # the deprecated free-text field is gone
