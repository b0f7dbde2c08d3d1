"""The error hierarchy. The CLI turns any `EduMoodError` into one clear line and exit code 2."""

from __future__ import annotations


class EduMoodError(Exception):
    """Base class for errors caused by user input or the environment, not by a bug."""


class ConfigError(EduMoodError, ValueError):
    """A configuration field has a value that is not allowed."""


class SourceError(EduMoodError):
    """A video source cannot be opened or has stopped for good."""


class ModelError(EduMoodError):
    """A model file is missing, is not a valid model, or breaks the metadata contract."""


class OutputError(EduMoodError):
    """An output path cannot be written."""


class ClusterError(EduMoodError):
    """The cluster mode cannot reach Ray or cannot get its workers started on it."""


class FrameError(EduMoodError, ValueError):
    """One frame cannot be processed (not a BGR image, undecodable): the pipeline skips it and counts it."""
