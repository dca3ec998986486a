"""Errors that the command line turns into one clear line and exit status 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a bad option value, a missing or unreadable file.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback.
    Library code raises it (or a subclass) for anything the user can fix; real internal
    errors are left as ordinary exceptions so their traceback is shown.
    """

    exit_code = 2


class DataError(UsageError):
    """Input data that is missing, malformed or inconsistent (a file the user supplied)."""
