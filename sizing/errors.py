"""The one error the sizing raises for a configuration no instance can serve."""

from __future__ import annotations




class SizingError(ValueError):
    """No instance can serve the model as configured; the message says why and the ways out."""
