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


def verdict_exit(verdict: int) -> int:
    """The exit code for one of agent.proto's verdicts: 3 for a mismatch, 4 for unknown, else 0."""
    from nsinspect.proto import agent_pb2 as pb  # noqa: PLC0415 - protobuf is not needed for --help

    if verdict == pb.VERDICT_MISMATCH:
        return EXIT_MISMATCH
    return EXIT_UNKNOWN if verdict == pb.VERDICT_UNKNOWN else EXIT_OK
