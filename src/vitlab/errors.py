"""The problems a user can fix: raised where they are found, printed once by the command wrapper
(``vitlab.cli.command``) as the last line, ``error: <message>``, without a traceback.

Each type is also the built-in exception code outside vitlab expects (a missing file is still a
``FileNotFoundError``), so callers that catch those keep working. Anything that is not a
``UserError`` is a bug, and keeps its traceback. This module imports nothing from the project.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (an option, a file, the network): the message names the value at
    fault and the fix."""


class ConfigError(UserError, ValueError):
    """An invalid option value: the message names the option and how to fix it."""


class DataError(UserError, ValueError):
    """Data that cannot be used as it is (a folder layout, an undecodable image, classes that differ
    between splits or from a checkpoint's)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the command was pointed at does not exist."""


class ExistingFileError(UserError, FileExistsError):
    """A file or folder that the command would overwrite belongs to something else."""


class NetworkError(UserError, ConnectionError):
    """A download failed: the message says where from, and the offline way."""


class MissingDependencyError(UserError, ImportError):
    """An optional package a feature needs is not installed: the message names the pip command."""
