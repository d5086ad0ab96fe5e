"""Exception types of sailvl2.

Every error a user can cause (bad files, bad images, bad prompts, bad configs) is raised as one of these,
with a message that names the problem, instead of a shape error from deep inside torch.
"""

from __future__ import annotations


class SailVL2Error(Exception):
    """Base class of every error sailvl2 raises on purpose."""


class ConfigError(SailVL2Error, ValueError):
    """A config file or config value is missing, malformed or of the wrong model type."""


class CheckpointError(SailVL2Error, OSError):
    """A checkpoint directory or weight file is missing, corrupt, or does not match the config."""


class ImageLoadError(SailVL2Error, ValueError):
    """An image could not be read or decoded (the message names the file or the input type)."""


class ImagePlaceholderError(SailVL2Error, ValueError):
    """The number of `<image>` placeholders differs from the number of images, or image tokens
    do not match the vision features."""


class TileBudgetError(SailVL2Error, ValueError):
    """The images of one request need more 448-px tiles than the configured budget allows."""


class ContextLengthError(SailVL2Error, ValueError):
    """A prompt (plus the tokens to generate) does not fit the model's context window."""


class InputError(SailVL2Error, TypeError):
    """An argument has the wrong type or an invalid value."""
