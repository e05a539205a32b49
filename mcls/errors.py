"""The errors a user can fix: the CLI prints each as one line on stderr and exits 2. No heavy imports here:
`mcls --help` must start fast."""
from __future__ import annotations

__all__ = ['DataError', 'ConfigError', 'UserError', 'WriteError', 'USER_ERRORS', 'RANKS_DIR']


class DataError(ValueError):
    "Input data that cannot be used; the message names the file and the fix."


class ConfigError(ValueError):
    "Settings that would fail later in training; raised before any work starts."


class UserError(Exception):
    "A command line that cannot be carried out; the message says what to give instead."


class WriteError(OSError):
    "A result that could not be written whole (full disk, file-size limit, read-only folder); nothing was committed."


USER_ERRORS = (DataError, ConfigError, UserError, WriteError)

# set by mcls.distributed.launch for its ranks: where they leave their one-line errors for the launcher to report
RANKS_DIR = 'MCLS_RANKS_DIR'
