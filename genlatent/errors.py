"""Exception hierarchy.

Every error that genlatent raises on bad input derives from :class:`GenlatentError`,
so the command line can print it as one line and exit non-zero. Each subclass also
derives from the builtin that a caller would otherwise catch.
"""

from __future__ import annotations


class GenlatentError(Exception):
    """Base class of every error genlatent reports to the user."""


class LatentSpecError(GenlatentError, ValueError):
    """A latent code or latent specification is invalid."""


class ConfigError(GenlatentError, ValueError):
    """A config value or override is unknown, mistyped or out of range."""


class UnknownNameError(GenlatentError, KeyError):
    """A registered name (experiment, architecture, dataset, ...) is not found."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; the message reads better bare.
        return str(self.args[0]) if self.args else ""


class PluginError(GenlatentError, RuntimeError):
    """A plugin failed to load or registered something invalid."""


class DataError(GenlatentError, OSError):
    """A data set is missing, incomplete or unreadable."""


class CheckpointError(GenlatentError, OSError):
    """A checkpoint cannot be written, read or applied."""


class DivergenceError(GenlatentError, FloatingPointError):
    """Training produced a non-finite loss or weight."""


class RunFolderError(GenlatentError, FileExistsError):
    """A run folder cannot be used for the requested run."""


class ImageFormatError(GenlatentError, ValueError):
    """Images have the wrong shape, dtype or value range for a function."""


class MissingExtraError(GenlatentError, ImportError):
    """An optional dependency that a command needs is not installed."""
