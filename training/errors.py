"""The error every training step raises when it cannot run as asked."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A training step cannot run as asked; the message says why and what to do."""
