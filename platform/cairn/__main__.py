"""`python -m cairn` is the `cairn` command (Ray job entrypoints use this form)."""

from cairn.cli import main

main()
