"""The `ckptmap` command line: one module per command, each a thin layer over `ckptmap.api`."""

from .main import app, main

__all__ = ["app", "main"]
