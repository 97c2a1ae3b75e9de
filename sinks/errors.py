"""One family of exceptions for everything sinks reports to a user.

Each class is one kind of failure; its message names the file, row, column or band at fault and
says what to do. The ``sinks`` command turns any :class:`SinksError` into one line on stderr and
a non-zero exit code, without a traceback.
"""

from __future__ import annotations


class SinksError(Exception):
    """Base class of every error sinks raises on purpose."""

    exit_code = 2


class InputError(SinksError, ValueError):
    """Bad user input: a missing file or column, impossible values, a CRS mismatch, ..."""


class SpecError(InputError):
    """A feature spec, recipe or rule set that cannot be used as written."""


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
