"""The package's version, written once: ``unistatus.__version__``, the HTTP API's
OpenAPI document and ``unistatus diagnose`` all read :data:`VERSION` (a test holds it
equal to the installed distribution's version, i.e. pyproject.toml's)."""

VERSION = "0.1.0"

# The schema revision this release installs (`unistatus init`): the head of the Alembic
# main chain, :data:`unistatus.db.schema.INSTALL_REVISION` (a test holds them equal).
# Here, beside the version, so that `--version` says it without loading SQLAlchemy or
# Alembic, and every command can check a database against it.
SCHEMA_REVISION = "0023"
