"""Exception types shared by all stages.

Every error raised on bad input names what was wrong (file, tree, branch, value), so that
an analyst running over thousands of files can find the culprit from the log line alone.
"""

from __future__ import annotations


class RS3LError(Exception):
    """Base class of all rs3l-coffea errors."""


class InputFileError(RS3LError, OSError):
    """A ROOT (or other) input file is missing, empty, corrupt or lacks what is needed."""


class MissingConstituentsError(InputFileError):
    """The file has jets but no particle candidates: RS3L needs jet constituents."""


class ConfigError(RS3LError, ValueError):
    """A configuration value is invalid; the message lists the valid choices."""


class ModelFormatError(RS3LError, ValueError):
    """A model or checkpoint file is not in a format we load, or does not fit the model."""
