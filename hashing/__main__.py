"""`python -m hashing` is the `hashing` command (torchrun launches it this way)."""

from hashing.cli.main import main

main()
