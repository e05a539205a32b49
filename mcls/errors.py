"""The errors a user can fix: each is a `FixableError`, which the CLI prints as one line on stderr (exit 2). Each
also derives from the builtin it refines, so callers that catch ValueError or OSError still catch it. No heavy
imports here: `mcls --help` must start fast."""
from __future__ import annotations

__all__ = ['FixableError', 'DataError', 'ConfigError', 'SettingsError', 'UserError', 'WriteError', 'RANKS_DIR']


class FixableError(Exception):
    "An error the user can fix; the message names the file, setting or argument and the fix."


class DataError(FixableError, ValueError):
    "Input data that cannot be used; the message names the file and the fix."


class ConfigError(FixableError, ValueError):
    "Settings that would fail later in training; raised before any work starts."


class SettingsError(FixableError, ValueError):
    "A setting that cannot be used; the message names the setting, where it came from and the fix."


class UserError(FixableError):
    "A command line that cannot be carried out; the message says what to give instead."


class WriteError(FixableError, OSError):
    "A result that could not be written whole (full disk, file-size limit, read-only folder); nothing was committed."


# set by mcls.distributed.launch for its ranks: where they leave their one-line errors for the launcher to report
RANKS_DIR = 'MCLS_RANKS_DIR'
