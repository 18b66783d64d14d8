"""``attncond`` command line: parses arguments and calls the library; nothing more.

Each subcommand lives in its own module ``attncond/cmd_<name>.py`` exposing
``register(subparsers)``; they are discovered here in name order.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

import attncond

from .options import check_device, check_plot_path
from .progress import close_all


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="attncond", description="Conditioning of gradient descent on softmax attention.")
    parser.add_argument("--version", action="version", version=attncond.__version__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(attncond.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"attncond.{info.name}").register(sub)
    return parser


#: Errors about the user's input: one line, exit status 2.
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
                PermissionError, FileExistsError, ImportError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]  # torch's C++ errors append a stack dump after the first line


def precheck(args: argparse.Namespace) -> None:
    """Checks every command needs before work: the device exists, ``--plot`` can be written."""
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "plot", None):
        check_plot_path(args.plot)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors end with one line on stderr, never a traceback.

    Exit status: 0 success, 1 a failure the command reports (or an unexpected error), 2 a usage
    error (bad flag, value, file or path), 130 interrupted (Ctrl-C, "attncond: interrupted").
    Set ``ATTNCOND_TRACEBACK=1`` to see the traceback of an unexpected error.
    """
    command = "attncond"
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version, usage errors (already printed)
            return exc.code if isinstance(exc.code, int) else 2
        command = f"attncond {args.command}"
        precheck(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        close_all()  # erase progress bars, so that the message is a line of its own
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        print("attncond: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # ``attncond … | head``: the reader left; nothing more to say
        _quiet_stdout()
        return 141
    except USAGE_ERRORS as exc:
        print(f"{command}: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: one line, not a traceback
        if os.environ.get("ATTNCOND_TRACEBACK"):
            raise
        print(f"{command}: error: {type(exc).__name__}: {_first_line(exc)} "
              "(set ATTNCOND_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that flushing a broken or half-written pipe at exit is silent."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout replaced (pytest capture)
        pass


def entry() -> NoReturn:
    """The ``attncond`` executable: :func:`main`, then exit with its status.

    After Ctrl-C everything is already saved and closed, so the process leaves with ``os._exit``
    instead of waiting for the interpreter's teardown of torch (seconds on a busy machine).
    """
    code = main()
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
