"""The dual-write adapter: the one way an application writes a status during the migration.

``core`` is the facade (:class:`DualWriteAdapter`); ``plan`` decides, ``rows`` reads and
locks, ``writes`` writes under the locks (and builds every unified and history row),
``create`` creates, ``fast`` is the one- or two-round-trip path, ``runner`` runs the
attempts, ``caller`` runs them in the caller's transaction (``connection=``),
``admission`` queues writes fairly, ``sql`` holds the prepared statements, ``keys`` the
idempotency keys, ``stats`` the operation statistics every adapter records and ``model``
the values they all share.
"""

from unistatus.adapter.core import *  # noqa: F403
from unistatus.adapter.core import __all__ as __all__
