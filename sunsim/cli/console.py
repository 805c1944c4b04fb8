"""The terminal consoles every subcommand prints to (one place, so no CLI module imports another)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

#: Results and progress: the terminal's width, ``COLUMNS`` when set, else 120 (a pipe or a file).
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 120)
#: Errors and warnings; not wrapped, so a path in a message is never broken across lines.
err_console = Console(stderr=True, soft_wrap=True)
