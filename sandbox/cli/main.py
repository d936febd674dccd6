"""The ``stack`` command line.

Each command lives in its own module, imported only when it runs: ``stack
--help`` and ``stack languages`` need not load the HTTP server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

COMMANDS = {
    "serve": "the full server: execute APIs (Piston, Judge0), services, actions, a gateway",
    "exec": "run one file once, as the server would; its output and exit code",
    "languages": "list the registered languages and what is installed",
    "action": "list the actions of --actions DIR, or show one",
    "run": "run an action with inputs given as -i key=value",
    "request": "handle a full action request JSON, here or --via a broker",
    "worker": "answer action requests (and Judge0 runs) from a broker queue group (NATS)",
    "key": "create, list and revoke API keys for the config file",
}
"""Every command with its one-line purpose, as ``stack --help`` lists them."""

OVERVIEW = "\n".join(
    [
        "usage: stack SCRIPT|DIR [options]       serve a script, or every script of a folder",
        "       stack COMMAND [options]",
        "",
        "commands:",
        *(f"  {name:<10} {text}" for name, text in COMMANDS.items()),
        "",
        "`stack COMMAND --help` shows a command's options; the options of",
        "`stack SCRIPT|DIR` follow. Documentation: README.md, docs/.",
        "",
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stack`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    from ..errors import StackError

    try:
        return _dispatch(args)
    except StackError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`stack ... | head -1`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _dispatch(args: list[str]) -> int:
    command = args[0] if args else None
    if args[-1:] == ["-h"] and command not in COMMANDS.keys() - {"serve"}:
        # -h is the host to listen on, as in microcule.
        print("stack: -h is the address to listen on (as in microcule: -h 0.0.0.0); "
              "for help use --help", file=sys.stderr)  # fmt: skip
        return 2
    if command == "languages":
        from .languages import languages, languages_parser

        return languages(languages_parser().parse_args(args[1:]))
    if command == "serve":
        from .serve import serve_command, serve_parser

        return serve_command(serve_parser().parse_args(args[1:]))
    if command == "exec":
        from .exec import exec_command, exec_parser

        return exec_command(exec_parser().parse_args(args[1:]))
    if command == "key":
        from .key import key_command

        return key_command(args[1:])
    if command == "worker":
        from .worker import main as worker_main

        return worker_main(args[1:])
    if command in ("action", "run", "request"):
        from .actions import main as actions_main

        return actions_main(command, args[1:])
    if command == "help" or "--help" in args[:1]:
        from .serve import script_parser

        print(OVERVIEW)
        script_parser().print_help()
        return 0
    from .serve import script_parser, serve_path

    if not args:
        print(OVERVIEW, file=sys.stderr)
        print("Run `stack --help` for every option.", file=sys.stderr)
        return 2
    return serve_path(script_parser().parse_args(args))
