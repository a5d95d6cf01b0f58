"""The package's version, written once: ``unistatus.__version__``, the HTTP API's
OpenAPI document and ``unistatus diagnose`` all read :data:`VERSION` (a test holds it
equal to the installed distribution's version, i.e. pyproject.toml's)."""

VERSION = "0.1.0"
