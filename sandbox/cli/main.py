"""The ``stack`` command line.

stack SCRIPT|DIR [options]            serve a script, or every script of a folder
stack serve [--services DIR] [opts]   the full server: the execute API (+ services)
stack exec FILE [ARGS...] [--json]    run one file once, like the server would
stack languages                       list languages and what is installed
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import StackError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stack`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Each command's module is imported only when it runs: `stack languages`
        # need not load the HTTP server.
        if args and args[0] == "languages":
            from .languages import languages, languages_parser

            return languages(languages_parser().parse_args(args[1:]))
        if args and args[0] == "serve":
            from .serve import serve_command, serve_parser

            return serve_command(serve_parser().parse_args(args[1:]))
        if args and args[0] == "exec":
            from .exec import exec_command, exec_parser

            return exec_command(exec_parser().parse_args(args[1:]))
        if args and args[0] == "key":
            from .key import key_command

            return key_command(args[1:])
        if args and args[0] == "worker":
            from .worker import main as worker_main

            return worker_main(args[1:])
        if args and args[0] in ("action", "run", "request"):
            from .actions import main as actions_main

            return actions_main(args[0], args[1:])
        from .serve import script_parser, serve_path

        if not args:
            script_parser().print_help()
            return 2
        return serve_path(script_parser().parse_args(args))
    except StackError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
