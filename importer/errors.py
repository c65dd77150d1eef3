"""One error root; exceptions become exit codes in exactly one place (the CLI)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    ok = 0
    some_failed = 1
    bad_input = 2
    service_unavailable = 3


class ImporterError(Exception):
    """Base of every error the importer reports to a person.

    The message says what went wrong, with which file or setting, and what to do.
    """

    exit_code: ExitCode = ExitCode.bad_input

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ImporterError):
    """A path, address, option or setting given by the operator is wrong."""


class ConfigError(BadInput):
    """A configuration key has a value that cannot be used."""


class ServiceUnavailable(ImporterError):
    """gearmand, the database or the mail server cannot be reached."""

    exit_code = ExitCode.service_unavailable


class GearmanUnavailable(ServiceUnavailable):
    """No configured gearmand accepted a connection."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database at IMPORTER_DATABASE_URL did not answer."""


class MailUnavailable(ServiceUnavailable):
    """The mail server at IMPORTER_MAIL_URL did not accept the message."""


class PayloadRejected(ImporterError):
    """A job's payload is unsigned, tampered with, expired or otherwise forged."""
