"""`nsinspect` (and `kubectl nsinspect`): see and verify the Linux namespaces of a pod.

Parses the command line (the commands and their flags: commands/table.py), builds the run's
Context once, and runs the command. Only argparse is imported at start-up; each command imports
grpc and friends when it runs, so `nsinspect --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .commands.table import BY_NAME, COMMANDS
from .context import Context
from .errors import EXIT_CODES_HELP as EPILOG
from .errors import CliError

# Before any command imports grpc: its C core would print TLS handshake failures to stderr at INFO,
# on top of our one-line error.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl nsinspect" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "nsinspect",
        description="See, compare and verify the Linux namespaces of Kubernetes pods.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
    for command in COMMANDS:
        shown: dict[str, Any] = {"epilog": command.epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}
        command.flags(sub.add_parser(command.name, help=command.help, usage=command.usage,
                                     **(shown if command.epilog else {})))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `-- CMD ARGS...` ends our flags: everything after the first "--" is the command, verbatim.
    if argv[:1] == ["__complete"]:  # the words being completed are not ours to parse
        from .commands.completion import run_complete  # noqa: PLC0415

        return run_complete(parser, argv[1:])
    head, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(head)
    entry = BY_NAME[args.subcommand]
    if entry.takes_command:
        args.command = command
    elif command:
        parser.error(f"{args.subcommand} takes no -- CMD")
    if hasattr(args, "pod") and not (args.pod or args.uid or getattr(args, "selector", "")):
        parser.error(f"{args.subcommand}: a pod name, --uid or -l SELECTOR is required")
    if getattr(args, "selector", "") and (args.pod or args.agent):
        parser.error(f"{args.subcommand}: -l SELECTOR goes through Kubernetes, without POD or --agent")
    run = entry.runner()
    try:
        return int(run(Context.from_args(args), args))
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
