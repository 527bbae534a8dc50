"""Command line: argument parsing, messages and exit codes only. All work is in pasture.api.

Exit codes: 0 success, 2 user error or an OS error such as a full disk (one line on stderr naming the path,
no traceback), 130 interrupted by Ctrl-C.
torch is imported only when a command runs, so `pasture --help` starts fast.

Each command family is a module that adds its commands, each handler beside its parser (FAMILIES):
data         doctor
runs         train, explain, export, recipes (and evaluate, predict from scoring, in that order)
scoring      evaluate, predict
camera       adapt, ask: a run fitted to a new camera's photos
gan          gan train, gan sample, gan score
studies      experiment, demo, tune
app          the local web app
options      argument types, the help formatter, and the flags several commands share
early        the path checks a command makes before it imports torch
__main__     `python -m pasture.cli`
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from pasture import __version__
from pasture.cli import app, camera, data, gan, runs, studies
from pasture.cli.early import check_early
from pasture.cli.options import HelpFormatter
from pasture.core.errors import MACHINE_ERRNOS, Interrupted, UserError, WriteFailed
from pasture.core.paths import TEMP_NAME, printable_name
from pasture.core.progress import showing_progress

# The command families, in --help order: each module adds its commands (with their handlers beside them).
FAMILIES = (data, runs, camera, gan, studies, app)

EXIT_BUG = 1

EXIT_USER_ERROR = 2

EXIT_INTERRUPTED = 130

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pasture",
        description="Grow good image classifiers from very little data, and measure honestly what helps.",
        epilog="Run `pasture COMMAND --help` for each command's options and examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pasture {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in FAMILIES:  # each family adds its commands, in --help order
        family.add_commands(commands)
    return parser


def command_parsers(parser: argparse.ArgumentParser | None = None, name: str = "pasture"):
    """(full command, its parser) for pasture and every subcommand, nested ones too, in --help order:
    what the docs' CLI reference is generated from, so it cannot drift from --help."""
    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                yield from command_parsers(sub_parser, f"{name} {sub_name}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["pasture", *argv]  # recorded in config.json and reports: what was asked, exactly
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        check_early(args)  # paths, before any heavy import: a typo answers at once
        with showing_progress(not getattr(args, "quiet", False)):  # bars for reading photos and features
            return args.command_handler(args)
    except WriteFailed as error:
        print(f"pasture: error: {error}; {_after_write_failure(args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UserError as error:
        print(f"pasture: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Interrupted as stopped:
        print(f"pasture: {stopped}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("pasture: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `pasture predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail again
        return EXIT_BROKEN_PIPE
    except OSError as error:
        if error.errno not in MACHINE_ERRNOS:
            return _bug()
        # Disk full, read-only, permissions where no write site said it itself: the machine's state.
        where = printable_name(_user_path(error.filename)) if error.filename is not None else "pasture"
        print(f"pasture: error: {where}: {error.strerror or error}; {_after_write_failure(args)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        return _bug()


def _bug() -> int:
    """A bug in pasture: its traceback, and one line that says so."""
    traceback.print_exc()
    print(
        "pasture: this is a bug in pasture, not a problem with what you asked; please report it with the lines above",
        file=sys.stderr,
    )
    return EXIT_BUG


def _user_path(filename) -> str:
    """The user's file for a temporary one of an atomic write (".model.onnx.a1b2c3d4.tmp" -> "model.onnx")."""
    path = Path(str(filename))
    temporary = TEMP_NAME.match(path.name)
    return str(path.with_name(temporary.group(1))) if temporary else str(path)


def _after_write_failure(args) -> str:
    """What to do after a failed write, and only what is true for this command."""
    if args.command == "train" or (args.command == "gan" and getattr(args, "gan_command", None) == "train"):
        return "free some space or fix the permission, then run the same command with --resume (the last checkpoint is kept)"
    if args.command in ("experiment", "tune", "demo"):
        return "free some space or fix the permission, then run the same command again (finished runs are kept)"
    return "free some space or fix the permission, then run the same command again"
