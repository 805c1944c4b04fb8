"""The one type for bad user input, so the CLI can tell it apart from a programming error.

Every error a user can fix (a bad scenario field, a bad flag, an unwritable output path) is an
:class:`InputError`; the CLI prints its message and exits 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the offending field or path and what is allowed.

    A ``ValueError`` so that pydantic validators raising it still report it as a field error.
    """


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C (cleanups run) without being mistaken for a bad input."""
