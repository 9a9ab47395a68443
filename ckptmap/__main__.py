"""`python -m ckptmap` is the `ckptmap` command."""

from .cli import main

main()
