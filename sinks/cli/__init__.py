"""The ``sinks`` command: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to the function that runs it, ``outputs`` (the options
that name files it writes, with their kind) and ``inputs`` (the options that name files it reads).
Before ``func`` runs, every output is checked (:func:`sinks.io.check_outputs`): nothing existing is
replaced without ``--overwrite``, no folder the user made is ever replaced, and outputs are distinct
from each other and from the inputs.

Every expected failure (:class:`sinks.errors.SinksError`, the operating system's errors on paths,
a usage mistake) becomes one line on stderr and a non-zero exit; ``--debug`` or ``SINKS_DEBUG=1``
shows the traceback instead. SIGTERM and SIGHUP stop the command at once: the outputs being written
are undone (staging removed, a folder moved aside put back) and the process exits with 128 + N;
SIGINT unwinds as KeyboardInterrupt. Either way nothing half-written is kept.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

import sinks
from sinks.constants import QUIET_LIBTIFF_ENV
from sinks.errors import SinksError

#: Subcommand modules in the order ``sinks --help`` lists them (the order of the workflow).
COMMANDS = ("demo", "stocks", "extract", "stack", "train", "evaluate", "map", "change", "zonal", "eligibility", "credit",
            "methodologies")


class UsageError(SinksError):
    """A command line argparse cannot parse (unknown option, bad value); ``prog``: the command whose
    arguments they were (``sinks map``)."""

    def __init__(self, message: str, prog: str = "sinks"):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at ``--help``."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')", self.prog)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sinks",
        description=(
            "Machine-learning carbon-sink estimation: field plots -> carbon stocks -> covariates "
            "-> spatially validated model -> Cloud-Optimized GeoTIFF carbon map -> per-parcel "
            "eligibility report."
        ),
        epilog="Run 'sinks COMMAND --help' for the options of one step. Units: Mg C/ha, t CO2e, ha. "
        "Errors are one line; --debug (or SINKS_DEBUG=1) shows the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"sinks {sinks.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"sinks.cli.{name}").register(sub)
    return parser


def _terminate(signum, frame):
    """SIGTERM / SIGHUP: undo the outputs being written and exit now (see sinks.io.abandon_outputs)."""
    from sinks.io import abandon_outputs, kept_notes

    abandon_outputs()
    kept = kept_notes()
    # worker processes (--executor processes) end with the job; not imported here: the signal may
    # arrive while the main thread is importing it, and a job with workers imported it long ago
    active_children = getattr(sys.modules.get("multiprocessing"), "active_children", None)
    for child in active_children() if active_children is not None else ():
        child.terminate()
    print(f"sinks: stopped by {signal.Signals(signum).name}; nothing half-written was kept"
          + "".join(f"; {note}" for note in kept), file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _catch_signals() -> dict:
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            try:
                previous[signum] = signal.signal(signum, _terminate)
            except ValueError:  # not the main thread (e.g. called from a worker): leave signals alone
                pass
    return previous


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SINKS_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    command = "sinks"
    outputs: list[str] = []
    previous = _catch_signals()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 1
        command = " ".join(["sinks", args.command, *([args.pool] if getattr(args, "pool", None) else [])])
        from sinks.cli._common import check_cli_outputs, output_paths

        outputs = output_paths(args)
        check_cli_outputs(args)
        if "SOURCE_DATE_EPOCH" in os.environ:  # a report's time stamp (sinks.io.generated_time), checked first
            from sinks.io import generated_time

            generated_time()
        if not debug:  # libtiff's own printing off where sinks writes rasters (sinks.cog.quiet_libtiff)
            os.environ[QUIET_LIBTIFF_ENV] = "1"
            if "sinks.cog" in sys.modules:  # imported already (the Python API before this command)
                sys.modules["sinks.cog"].quiet_libtiff()
        args.func(args)
    except SinksError as exc:
        if debug:  # the traceback, and still the documented exit status (docs/errors.md)
            traceback.print_exc()
        print(f"{exc.prog if isinstance(exc, UsageError) else command}: error: {_with_notes(str(exc), exc)}",
              file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if debug:
            traceback.print_exc()
        print(f"{command}: error: {_with_notes(_os_message(exc, outputs), exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{command}: {_with_notes('interrupted; nothing half-written was kept', exc)}", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line, with the way to the traceback
        if debug:
            raise
        print(f"{command}: internal error: {type(exc).__name__}: {_with_notes(str(exc), exc)} "
              "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _with_notes(message: str, exc: BaseException) -> str:
    """The message and the notes added on the way up (``BaseException.add_note``: what was kept)."""
    return "; ".join([message, *getattr(exc, "__notes__", ())])


def _os_message(exc: OSError, outputs: list[str] = ()) -> str:
    """One line for an operating-system or GDAL I/O error: the file, the cause, what to do.

    rasterio's ``RasterioIOError`` ("Write failed. See previous exception for details.") carries no
    errno; its cause is GDAL's message, and a full disk holding one of the command's ``outputs`` is
    named as the likely reason (:func:`sinks.io.full_disk_hint`)."""
    import errno

    from sinks.io import full_disk_hint, staged_for

    where = f"{staged_for(exc.filename)}: " if exc.filename else ""  # the output, not its hidden staging
    if not where and outputs and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):  # a write: of these
        where = f"writing {', '.join(str(path) for path in outputs)}: "  # not map(): sinks.cli.map shadows it here
    what = exc.strerror or str(exc)
    if exc.errno is None and exc.__cause__ is not None:
        what = f"{what.split('. See previous')[0].rstrip('.')}: {exc.__cause__}"
    advice = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EFBIG: "the file is larger than this file system or a file-size limit allows; write elsewhere",
        errno.EACCES: "check the permissions, or write elsewhere",
        errno.EROFS: "the file system is read-only; write elsewhere",
        errno.ENOENT: "check the path",
    }.get(exc.errno, "") if exc.errno is not None else full_disk_hint(outputs)
    return f"{where}{what}" + (f"; {advice}" if advice else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
