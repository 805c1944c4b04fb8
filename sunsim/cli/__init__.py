"""The ``sunsim`` command line: one module per command, argument types and consoles.
"""

from sunsim.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
