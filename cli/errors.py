"""The CLI's exit codes and its one-line error, importable without grpc (start-up stays fast)."""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_UNKNOWN = 0, 1, 2, 3, 4

EXIT_CODES_HELP = """\
exit codes: 0 ok; 1 error (one line on stderr); 2 usage; 3 a verification found a mismatch;
            4 a namespace could not be verified (process gone or unreadable)
"""


class CliError(Exception):
    """A failure to show the user in one line, with the exit code scripts can rely on."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code
