"""Names that become parts of file paths (scenarios, variants, sweeps, models), checked up front.

A name is one path component from a small safe alphabet, so that ``results/<scenario>/<variant>/``
can never climb out of its folder, land on the folder itself, or make a hidden file.
"""

from __future__ import annotations

import re

from sunsim.errors import InputError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ALLOWED = "1-64 characters from letters, digits, '.', '_' and '-', starting with a letter or digit"


def check_name(value: object, field: str) -> str:
    """Return ``value`` if it is a safe name, else raise :class:`InputError` (a ``ValueError``) naming ``field``."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise InputError(f"{field}: {value!r} is not a valid name; allowed: {ALLOWED}")
    return value
