"""User-facing errors: one line that names the problem and the fix; the CLI prints them without a traceback."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input (file, option, checkpoint, config) that the user can fix."""


class CheckpointError(UserError):
    """A checkpoint file that cannot be read, or whose tensors do not match the model configuration."""


class ConfigError(UserError):
    """An invalid or inconsistent configuration value."""
