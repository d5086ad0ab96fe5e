"""The data layer's exception type (kept apart so every data module can import it without cycles)."""

from __future__ import annotations

from ..errors import SailVL2Error

__all__ = ["DataError"]


class DataError(SailVL2Error, ValueError):
    """Training data cannot be read, or too much of it is bad (the message names the file and the counts)."""
