"""``python -m benchmarks.gpu_check {pack,run,checks}`` (``checks`` is run's own child process)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("pack", "run", "checks"):
        print("usage: python -m benchmarks.gpu_check {pack,run} [--help]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "pack":
        from .pack import main as pack_main

        return pack_main(rest)
    if command == "run":
        from .run import main as run_main

        return run_main(rest)
    from .checks import main as checks_main

    return checks_main(rest)


if __name__ == "__main__":
    sys.exit(main())
