"""Command line: a dispatcher over the capabilities' commands.

Each capability registers its own subcommands (``tokensieve.<capability>.cli.register``);
parsing imports nothing heavy, so ``--help`` and a mistyped option answer at once. A
user's mistake becomes ``error: <one line>`` on stderr and exit code 2; Ctrl-C, SIGTERM
and SIGHUP unwind through every cleanup and exit 130 / 128 + the signal number.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys

from tokensieve.commandline import Parser, quiet_libraries
from tokensieve.errors import Terminated, UserError, termination_unwinds

DESCRIPTION = "Find the tokens that matter in a language model's work, and act only on them."
CAPABILITIES = ("inspect", "generate", "kv", "vocab", "rl", "speculate", "bytes")


def build_parser() -> Parser:
    parser = Parser(prog="tokensieve", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in CAPABILITIES:
        importlib.import_module(f"tokensieve.{name}.cli").register(commands)
    return parser


def as_flags(message: str) -> str:
    """The library names a parameter `like_this`; on the command line it is --like-this."""
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: "--" + m.group(1).replace("_", "-"), message)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        with termination_unwinds():
            args = build_parser().parse_args(argv)
            quiet_libraries(getattr(args, "quiet", False))
            return args.run(args)
    except UserError as exc:
        print(f"error: {as_flags(str(exc))}", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"error: stopped by {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
