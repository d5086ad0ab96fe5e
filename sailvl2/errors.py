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


class DatasetError(SailVL2Error, ValueError):
    """A benchmark file is missing or is not a VLMEvalKit-style TSV (no header, no index/question column), or a
    task-suite split cannot be exported to one."""


class EndpointError(SailVL2Error, RuntimeError):
    """A request to a generation endpoint (an OpenAI-compatible server) failed. ``status`` is the HTTP status
    (None for connection errors and timeouts), ``body`` the start of the response body, ``attempts`` the
    requests made."""

    def __init__(self, message: str, status: int | None = None, body: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.attempts = attempts


class JudgeError(SailVL2Error, RuntimeError):
    """The judge endpoint kept failing (after all retries) or refused the request."""


class CurationError(SailVL2Error, ValueError):
    """A data-curation pipeline is malformed (unknown stage or setting, bad input spec), or its output folder
    holds a run of a different pipeline."""
