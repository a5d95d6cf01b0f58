"""The dual-write adapter: the one way an application writes a status during the migration."""

from unistatus.adapter.core import *  # noqa: F403
from unistatus.adapter.core import __all__ as __all__
