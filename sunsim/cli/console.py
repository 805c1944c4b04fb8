"""The terminal consoles every subcommand prints to (one place, so no CLI module imports another)."""

from __future__ import annotations

import sys

from rich.console import Console

#: Results and progress.
console = Console(width=None if sys.stdout.isatty() else 120)
#: Errors and warnings; not wrapped, so a path in a message is never broken across lines.
err_console = Console(stderr=True, soft_wrap=True)
