"""One family of exceptions for everything sinks reports to a user.

Each class is one kind of failure; its message names the file, row, column or band at fault and
says what to do. The ``sinks`` command turns any :class:`SinksError` (and the operating system's
errors on paths: permissions, a full disk) into one line on stderr and a non-zero exit code,
without a traceback (``--debug`` or ``SINKS_DEBUG=1`` shows it). ``docs/errors.md`` describes each
class; a test keeps the two in step.
"""

from __future__ import annotations


class SinksError(Exception):
    """Base class of every error sinks raises on purpose."""

    exit_code = 2


class InputError(SinksError, ValueError):
    """Bad user input: a missing file or column, impossible values, a CRS mismatch, ..."""


class SpecError(InputError):
    """A feature spec, recipe or rule set that cannot be used as written."""


class ImplausibleValueError(InputError):
    """Values outside the physically plausible range, usually a unit slip (mm for cm, m² for ha)."""


class OutputError(InputError):
    """An output that cannot be written safely: it exists, is a folder, is an input, or its
    folder is missing or read-only."""


class ResourceError(InputError):
    """A job larger than the limits: too many pixels, or more memory than the machine has."""


class ModelMismatchError(SinksError):
    """A model bundle that does not match the features, grid or version it is used with."""


class MissingDependencyError(SinksError, ImportError):
    """An optional extra (``sinks[ee]``, ``sinks[dask]``) is needed but not installed."""

    exit_code = 3


def require(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"this needs the optional package '{module}': install it with "
            f"pip install 'sinks[{extra}]'"
        ) from exc
