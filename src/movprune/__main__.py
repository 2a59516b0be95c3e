"""``python -m movprune``."""

from movprune.cli.main import main

main()
