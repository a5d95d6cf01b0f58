#!/usr/bin/env python
"""The migration strategy's load test: a thin wrapper over unistatus.sim.loadtest.

    python scripts/load_test_dual_write.py --transactions=10000 --concurrent=50

The same as ``unistatus loadtest --mode DUAL_WRITE_LEGACY_PRIMARY``, with that command's
options and the global ones (``--database-url URL``, ``--debug``) in any order; ``--help``
lists them under this script's name (:func:`unistatus.cli.loadtest_cmd.script_app`).
"""

from __future__ import annotations


def main() -> None:
    from unistatus.cli import run_program
    from unistatus.cli.loadtest_cmd import script_app

    run_program(script_app())


if __name__ == "__main__":
    main()
