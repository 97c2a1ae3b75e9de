"""Checks for the files users write (feature specs, recipes, rule sets): keys, types and ranges.

Every loader validates its file completely when it is read, before any work, with these helpers,
so that a typo or an out-of-range value is one :class:`~sinks.errors.SpecError` naming the file,
the section and the key, with a did-you-mean for misspelt keys.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping

from sinks.errors import InputError, SpecError

_MISSING = object()


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``options`` (one that differs only in case
    first), or ``""`` when none is close."""
    options = [str(o) for o in options]
    same = [o for o in options if o.lower() == str(name).lower() and o != str(name)]
    close = same or difflib.get_close_matches(str(name), options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(section: Mapping, allowed: Iterable[str], where: str) -> None:
    """Refuse keys of ``section`` not in ``allowed``, suggesting the closest allowed key."""
    allowed = list(allowed)
    unknown = [k for k in section if k not in allowed]
    if unknown:
        hints = "; ".join(f"'{k}'{did_you_mean(k, allowed)}" for k in unknown)
        raise SpecError(f"{where}: unknown key {hints}; allowed keys: {', '.join(allowed)}")


def table(section: Mapping, key: str, where: str, *, required: bool = False) -> dict:
    """The sub-table ``section[key]`` (``{}`` when absent and not required)."""
    value = section.get(key, _MISSING)
    if value is _MISSING:
        if required:
            raise SpecError(f"{where}: missing [{key}] section")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: '{key}' must be a table ([{key}] section), got {type(value).__name__} {value!r}")
    return dict(value)


def number(section: Mapping, key: str, where: str, *, default=_MISSING, integer: bool = False,
           minimum: float | None = None, maximum: float | None = None,
           exclusive_minimum: bool = False, exclusive_maximum: bool = False):
    """``section[key]`` as a finite number within the given bounds, or ``default`` when absent."""
    value = section.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise SpecError(f"{where}: missing '{key}'")
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise SpecError(f"{where}: '{key}' must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{where}: '{key}' must be finite, got {value!r}")
    low_bad = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    high_bad = maximum is not None and (value >= maximum if exclusive_maximum else value > maximum)
    if low_bad or high_bad:
        raise SpecError(f"{where}: '{key}' = {value!r} is out of range; it must be {_range(minimum, maximum, exclusive_minimum, exclusive_maximum)}")
    return int(value) if integer else float(value)


def string(section: Mapping, key: str, where: str, *, default=_MISSING, choices: Iterable[str] | None = None):
    """``section[key]`` as a non-empty string (one of ``choices`` when given), or ``default``."""
    value = section.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise SpecError(f"{where}: missing '{key}'")
        return default
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise SpecError(f"{where}: '{key}' = {value!r} is not one of {', '.join(choices)}"
                            f"{did_you_mean(value, choices)}")
    return value


def _range(minimum, maximum, exclusive_minimum, exclusive_maximum) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_maximum else '<='} {maximum:g}")
    return " and ".join(parts)


#: Largest window (pixels per side): a window's memory and the output's GeoTIFF tiles grow with its
#: square (4096² float32 is 64 MiB per band and tile; GDAL asked for 200 GB at 100,000 and failed
#: after the work was done). Readers fetch whole tiles, and COGs use 256-1024.
MAX_BLOCK = 4096


def looks_like_percentage(value) -> bool:
    """A level written as a percentage (``90`` for 0.9): a number from 50 to below 100. Below 50 it
    is more likely a slip of another kind, and is reported as out of (0, 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 50 <= value < 100


def check_block(block) -> int:
    """A window size: an integer multiple of 16 (the GeoTIFF tile size), from 16 to :data:`MAX_BLOCK`."""
    if (isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 16 or block % 16
            or block > MAX_BLOCK):
        raise InputError(f"block must be a multiple of 16 (the GeoTIFF tile size) from 16 to {MAX_BLOCK}, got "
                         f"{block!r}; e.g. 256 or 512")
    return int(block)
