#!/usr/bin/env python
"""The load-test script: a thin wrapper over unistatus.sim.loadtest.

    python scripts/load_test_dual_write.py --transactions=10000 --concurrent=50

Same as ``unistatus loadtest --mode DUAL_WRITE_LEGACY_PRIMARY``; every option of that
command works here (``--baseline``, ``--json``, ``--mode``, ``--database-url URL``).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from unistatus.cli import app

    global_opts: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:  # --database-url is a global option: it goes before the command
        if arg == "--database-url":
            global_opts += [arg, next(args, "")]
        elif arg.startswith("--database-url="):
            global_opts.append(arg)
        else:
            rest.append(arg)
    if not any(a == "--mode" or a.startswith("--mode=") for a in rest):
        rest += ["--mode", "DUAL_WRITE_LEGACY_PRIMARY"]
    app([*global_opts, "loadtest", *rest], prog_name="load_test_dual_write.py")


if __name__ == "__main__":
    main(sys.argv[1:])
