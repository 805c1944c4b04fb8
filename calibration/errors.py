"""Errors the calibration commands raise on bad input; the CLI turns them into a non-zero exit."""

from __future__ import annotations

from sunsim.errors import InputError


class CalibrationError(InputError):
    """A calibration, cost or validation request is invalid; the message names the offending field."""


class UnsupportedFormat(CalibrationError):
    """A weight format cannot run on this device (e.g. fp8 without fp8 tensor cores)."""


class BudgetExceeded(RuntimeError):
    """The calibration's time budget ran out; finished formats are kept, the current one is dropped."""
