"""Growth-curve tables for ex-ante crediting: expected stock change per parcel from a cited table.

A growth-curve table (CSV, format in ``docs/crediting.md``) gives, per species group x site class,
either the carbon **stock** at stand ages (Mg C/ha or t CO2e/ha) or an annual **increment**
(Mg C/ha/yr or t CO2e/ha/yr) over age bands, each row with its ``source`` (document, table, page),
a ``checked`` flag (``confidence`` says why where false) and, where the source gives one, an
uncertainty (``sd``, or ``ci_lower``/``ci_upper`` at ``ci_level``). The file is validated completely
on loading, with the helpers of :mod:`sinks.validate` as rule sets are.

Between ages a curve is **linear**: a stock curve is interpolated linearly between its ages; an
increment row applies from the previous row's age (0 for the first) to its own ``age_yr``, so the
stock it implies is piecewise linear too. A curve is never extrapolated beyond its ages.

Every expected change is a linear combination of table values, ΔS = Σ c_i v_i (t CO2e/ha); its sd
is taken as Σ |c_i| sd_i, the largest sd the combination can have whatever the correlation of the
rows' errors (triangle inequality), so the interval is conservative.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from sinks import validate
from sinks.errors import InputError, SpecError
from sinks.validate import check_keys, did_you_mean

#: Columns of a growth-curve table: required, then optional.
REQUIRED_COLUMNS = ("species_group", "site_class", "quantity", "unit", "age_yr", "value", "source", "checked")
OPTIONAL_COLUMNS = ("sd", "ci_lower", "ci_upper", "ci_level", "confidence", "note")
#: Units a row may state, per quantity, with the factor to t CO2e (per ha, or per ha and year).
CO2_PER_C = 44.0 / 12.0
UNITS = {
    "stock": {"Mg C/ha": CO2_PER_C, "t C/ha": CO2_PER_C, "t CO2e/ha": 1.0},
    "increment": {"Mg C/ha/yr": CO2_PER_C, "t C/ha/yr": CO2_PER_C, "t CO2e/ha/yr": 1.0},
}
#: Parcel columns the ex-ante route reads: the table key, and the stand age (one of the two).
KEY_COLUMNS = ("species_group", "site_class")
AGE_COLUMNS = ("planting_year", "stand_age_yr")
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")
INTERPOLATION = ("linear between the table's ages (stock curves); increment rows constant over their age band "
                 "(from the previous row's age_yr, 0 for the first, to their own); never extrapolated")
SD_METHOD = ("sd of the change = sum of |c_i| x sd_i over the table rows it combines (change = sum c_i x value_i): "
             "the largest sd for any correlation of the rows' errors (triangle inequality); a CI is turned into "
             "an sd as its larger half-width / z(ci_level); parcels scale with their area (the table's error "
             "is shared, fully correlated, by all parcels on a row)")


@dataclass(frozen=True)
class GrowthRow:
    """One checked row; ``value`` and ``sd`` in the row's ``unit``, ``factor`` to t CO2e."""

    row: int
    species_group: str
    site_class: str
    quantity: str
    unit: str
    age_yr: float
    value: float
    sd: float | None
    source: str
    checked: bool
    confidence: str
    factor: float

    def describe(self) -> dict:
        return {"row": self.row, "species_group": self.species_group, "site_class": self.site_class,
                "quantity": self.quantity, "unit": self.unit, "age_yr": self.age_yr, "value": self.value,
                "sd": self.sd, "source": self.source, "checked": self.checked, "confidence": self.confidence}


@dataclass(frozen=True)
class GrowthCurve:
    """The rows of one species group x site class, ages strictly increasing."""

    species_group: str
    site_class: str
    quantity: str
    unit: str
    rows: tuple[GrowthRow, ...]

    @property
    def ages(self) -> tuple[float, float]:
        """The ages (years) the curve covers."""
        first = self.rows[0].age_yr if self.quantity == "stock" else 0.0
        return first, self.rows[-1].age_yr

    def stock_weights(self, age: float) -> dict[int, float]:
        """Coefficients c_i with S(age) = Σ c_i v_i (row index -> c_i; stock relative to age 0 for an
        increment curve); ``age`` must lie within :attr:`ages`."""
        ages = [r.age_yr for r in self.rows]
        if self.quantity == "increment":
            out, start = {}, 0.0
            for i, end in enumerate(ages):
                overlap = min(age, end) - start
                if overlap > 0:
                    out[i] = overlap
                start = end
            return out
        for i in range(len(ages) - 1):
            if ages[i] <= age <= ages[i + 1]:
                w = (age - ages[i]) / (ages[i + 1] - ages[i])
                return {k: v for k, v in ((i, 1.0 - w), (i + 1, w)) if v != 0}
        raise ValueError(f"age {age} outside the curve")

    def _level(self, weights: dict[int, float]) -> float:
        """Σ c_i v_i in t CO2e/ha for coefficients ``weights`` (row index -> c_i)."""
        return sum(c * self.rows[i].value * self.rows[i].factor for i, c in weights.items())

    def stock_tco2e_ha(self, age: float) -> float:
        """The stock at ``age`` (years), t CO2e/ha (relative to age 0 for an increment curve)."""
        return self._level(self.stock_weights(age))

    def change(self, age0: float, age1: float) -> dict:
        """Expected change of stock from stand age ``age0`` to ``age1`` (years), t CO2e/ha, with its
        sd (None when a row it uses gives no uncertainty) and the rows used with their weights."""
        w0, w1 = self.stock_weights(age0), self.stock_weights(age1)
        weights = {i: w1.get(i, 0.0) - w0.get(i, 0.0) for i in sorted(set(w0) | set(w1))}
        weights = {i: c for i, c in weights.items() if c != 0}
        lacking = [self.rows[i].row for i in weights if self.rows[i].sd is None]
        sd = None if lacking else sum(abs(c) * self.rows[i].sd * self.rows[i].factor for i, c in weights.items())
        return {"species_group": self.species_group, "site_class": self.site_class, "quantity": self.quantity,
                "unit": self.unit, "age_start_yr": age0, "age_end_yr": age1,
                "stock_start_tco2e_ha": self._level(w0), "stock_end_tco2e_ha": self._level(w1),
                "change_tco2e_ha": self._level(w1) - self._level(w0), "change_sd_tco2e_ha": sd, "rows_without_sd": lacking,
                "rows": [{"row": self.rows[i].row, "age_yr": self.rows[i].age_yr, "weight": c,
                          "source": self.rows[i].source, "checked": self.rows[i].checked}
                         for i, c in weights.items()]}


@dataclass(frozen=True)
class GrowthTable:
    path: str
    sha256: str
    curves: dict  # (species_group, site_class) -> GrowthCurve

    def row(self, number: int) -> GrowthRow:
        return next(r for c in self.curves.values() for r in c.rows if r.row == number)


def _lines(path: Path) -> list[str]:
    """The file's text lines (UTF-8, else GB18030), comment lines (first character ``#``) dropped."""
    from sinks.io import CSV_ENCODINGS

    data = path.read_bytes()
    for i, name in enumerate(CSV_ENCODINGS):
        try:
            text = data.decode(name)
            break
        except UnicodeDecodeError as exc:
            if i == len(CSV_ENCODINGS) - 1:
                raise SpecError(f"{path}: cannot decode the growth table as {' or '.join(CSV_ENCODINGS)} "
                                f"({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


def _cells(raw: dict, where: str) -> dict:
    """A CSV row as a section for :mod:`sinks.validate`: blank cells absent, numbers parsed."""
    out = {}
    for key, text in raw.items():
        text = (text or "").strip()
        if not text:
            continue
        if key in ("age_yr", "value", "sd", "ci_lower", "ci_upper", "ci_level"):
            try:
                out[key] = float(text)
            except ValueError:
                raise SpecError(f"{where}: '{key}' must be a number, got {text!r}") from None
        else:
            out[key] = text
    return out


def _checked(cells: dict, where: str) -> bool:
    text = validate.string(cells, "checked", where).lower()
    if text not in TRUE + FALSE:
        raise SpecError(f"{where}: 'checked' must be true or false, got {cells['checked']!r}")
    return text in TRUE


def _sd(cells: dict, value: float, where: str) -> float | None:
    """The row's sd (its unit) from ``sd`` or ``ci_lower``/``ci_upper``/``ci_level``; None if neither."""
    from sinks.stats import normal_quantile

    ci = [k for k in ("ci_lower", "ci_upper", "ci_level") if k in cells]
    if "sd" in cells and ci:
        raise SpecError(f"{where}: give either 'sd' or the interval (ci_lower, ci_upper, ci_level), not both")
    if "sd" in cells:
        return validate.number(cells, "sd", where, minimum=0)
    if not ci:
        return None
    if len(ci) < 3:
        missing = [k for k in ("ci_lower", "ci_upper", "ci_level") if k not in cells]
        raise SpecError(f"{where}: an interval needs ci_lower, ci_upper and ci_level; missing {', '.join(missing)}")
    low = validate.number(cells, "ci_lower", where, minimum=0)
    high = validate.number(cells, "ci_upper", where, minimum=0)
    level = validate.number(cells, "ci_level", where, minimum=0, maximum=1, exclusive_minimum=True,
                            exclusive_maximum=True)
    if not low <= value <= high:
        raise SpecError(f"{where}: the interval {low:g}-{high:g} does not contain the value {value:g}")
    return max(value - low, high - value) / normal_quantile(level)


def _row(raw: dict, number: int, where_file: str) -> GrowthRow:
    """One row checked: keys, types, ranges, unit, uncertainty, source."""
    name = f"{where_file}: row {number}"
    cells = _cells(raw, name)
    key = f"{cells.get('species_group', '?')} / {cells.get('site_class', '?')}"
    age = cells.get("age_yr", "?")
    where = f"{name} ({key}, age {f'{age:g}' if isinstance(age, (int, float)) else age})"
    if "source" not in cells:
        raise SpecError(f"{where}: no 'source' (every row cites its document, table and page)")
    missing = [k for k in REQUIRED_COLUMNS if k not in cells]
    if missing:
        raise SpecError(f"{where}: missing {', '.join(missing)}")
    quantity = validate.string(cells, "quantity", where, choices=list(UNITS))
    unit = cells["unit"]
    if unit not in UNITS[quantity]:
        raise SpecError(f"{where}: unknown unit {unit!r} for a {quantity} row{did_you_mean(unit, UNITS[quantity])}; "
                        f"give one of {', '.join(UNITS[quantity])}")
    age = validate.number(cells, "age_yr", where, minimum=0, exclusive_minimum=quantity == "increment")
    value = validate.number(cells, "value", where, minimum=0)
    checked = _checked(cells, where)
    confidence = cells.get("confidence", "")
    if not checked and not confidence:
        raise SpecError(f"{where}: checked = false needs a 'confidence' note saying how far the source was verified")
    return GrowthRow(number, cells["species_group"], cells["site_class"], quantity, unit, age, value,
                     _sd(cells, value, where), cells["source"], checked, confidence, UNITS[quantity][unit])


def _curve(rows: list[GrowthRow], where_file: str, max_tco2e_ha: float, max_source: str) -> GrowthCurve:
    """The rows of one key as a curve: one quantity and unit, ages strictly increasing, plausible stock."""
    first = rows[0]
    key = f"{first.species_group} / {first.site_class}"
    for row in rows[1:]:
        if (row.quantity, row.unit) != (first.quantity, first.unit):
            raise SpecError(f"{where_file}: row {row.row} ({key}) gives {row.quantity} in {row.unit}, but row "
                            f"{first.row} gives {first.quantity} in {first.unit}: one curve has one quantity and unit")
    seen: dict[float, int] = {}
    for row in rows:
        if row.age_yr in seen:
            raise SpecError(f"{where_file}: rows {seen[row.age_yr]} and {row.row} duplicate the key {key}, age "
                            f"{row.age_yr:g}")
        seen[row.age_yr] = row.row
    for prev, row in zip(rows, rows[1:]):
        if row.age_yr < prev.age_yr:
            raise SpecError(f"{where_file}: row {row.row} ({key}): ages must increase down the curve, but age "
                            f"{row.age_yr:g} follows age {prev.age_yr:g} (row {prev.row})")
    if first.quantity == "stock" and len(rows) < 2:
        raise SpecError(f"{where_file}: row {first.row} ({key}): a stock curve needs at least two ages to give a "
                        "change")
    curve = GrowthCurve(first.species_group, first.site_class, first.quantity, first.unit, tuple(rows))
    for row in rows:
        stock = curve.stock_tco2e_ha(row.age_yr)
        if stock > max_tco2e_ha:
            raise SpecError(f"{where_file}: row {row.row} ({key}, age {row.age_yr:g}): a stock of {stock:,.0f} "
                            f"t CO2e/ha is above the highest documented carbon density ({max_tco2e_ha:,.0f} t CO2e/ha: "
                            f"{max_source[:80]}...): check the unit")
    return curve


def load_growth_table(path: str | os.PathLike) -> GrowthTable:
    """Load and check a growth-curve table (CSV) completely: columns (with a did-you-mean), every
    row's types, ranges, unit, uncertainty and source, and every curve's ages; a
    :class:`~sinks.errors.SpecError` names the file and row at fault."""
    from sinks.io import sha256_file
    from sinks.pools.plausibility import max_stock_mg_ha

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"growth table {path} not found" if not path.exists() else f"{path}: is not a file")
    where = str(path)
    reader = csv.DictReader(io.StringIO("\n".join(_lines(path))))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise SpecError(f"{where}: empty growth table (no header)")
    check_keys(dict.fromkeys(header), [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS], f"{where}: header")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SpecError(f"{where}: growth table lacks column(s) {', '.join(missing)}")
    max_mg, max_source = max_stock_mg_ha("forest")
    grouped: dict[tuple[str, str], list[GrowthRow]] = {}
    for number, raw in enumerate(reader, start=1):
        if None in raw:
            raise SpecError(f"{where}: row {number} has more cells than the header")
        row = _row({k.strip(): v for k, v in raw.items()}, number, where)
        grouped.setdefault((row.species_group, row.site_class), []).append(row)
    if not grouped:
        raise SpecError(f"{where}: growth table has no rows")
    curves = {key: _curve(rows, where, max_mg * CO2_PER_C, max_source) for key, rows in grouped.items()}
    return GrowthTable(where, sha256_file(path), curves)


# ---- parcels ------------------------------------------------------------------------------------

def _key_text(value) -> str | None:
    """A parcel's key cell as the table's text (1.0 -> "1"); None when empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _age(row: dict, y1: float) -> tuple[float | None, str | None]:
    """Stand age (years) at ``y1`` from ``planting_year`` or ``stand_age_yr``, or the problem."""
    given = {c: row.get(c) for c in AGE_COLUMNS if _key_text(row.get(c)) is not None}
    if not given:
        return None, f"no {' or '.join(AGE_COLUMNS)}"
    if len(given) == 2:
        return None, f"both {' and '.join(AGE_COLUMNS)} given; give one"
    (column, value), = given.items()
    number = _number(value)
    if number is None:
        return None, f"{column} {value!r} is not a number"
    age = y1 - number if column == "planting_year" else number
    if age < 0:
        return None, (f"planted in {number:g}, after the first year {y1:g}: start the crediting period at planting"
                      if column == "planting_year" else f"stand_age_yr {number:g} is negative")
    return age, None


def parcel_changes(parcels, table: GrowthTable, y1: float, y2: float, *, source: str = "parcels") -> list[dict]:
    """Per parcel (in order) the expected change of :meth:`GrowthCurve.change` over Y1 -> Y2 from its
    ``species_group``, ``site_class`` and ``planting_year`` (or ``stand_age_yr`` at Y1). Every
    parcel's problem (missing column or cell, a key not in the table, ages beyond the curve) is
    collected and raised as one :class:`~sinks.errors.InputError` naming the parcels."""
    columns = list(getattr(parcels, "columns", ()))
    missing = [c for c in KEY_COLUMNS if c not in columns]
    if not any(c in columns for c in AGE_COLUMNS):
        missing.append(" or ".join(AGE_COLUMNS))
    if missing:
        raise InputError(f"{source}: the ex-ante route (--growth) needs parcel column(s) {', '.join(missing)} "
                         f"(the growth table's key and the stand age; see docs/crediting.md)")
    keys = sorted(table.curves)
    out, problems = [], []
    frame = parcels.drop(columns=[parcels.geometry.name]) if hasattr(parcels, "geometry") else parcels
    for row in frame.to_dict("records"):
        pid, key = row["parcel_id"], tuple(_key_text(row.get(c)) for c in KEY_COLUMNS)
        age0, why = _age(row, y1)
        if None in key:
            why = f"no {' / '.join(c for c, k in zip(KEY_COLUMNS, key) if k is None)}"
        elif key not in table.curves:
            near = did_you_mean(" / ".join(key), [" / ".join(k) for k in keys])
            why = f"{key[0]} / {key[1]} is not a key of {table.path}{near}"
        elif why is None:
            curve = table.curves[key]
            low, high = curve.ages
            age1 = age0 + (y2 - y1)
            if age0 < low or age1 > high:
                why = (f"stand ages {age0:g}-{age1:g} over {y1:g}-{y2:g} lie beyond the {key[0]} / {key[1]} "
                       f"curve ({low:g}-{high:g} years); the curve is not extrapolated")
            else:
                out.append(curve.change(age0, age1))
                continue
        problems.append(f"parcel {pid}: {why}")
        out.append(None)
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise InputError(f"{source}: cannot credit ex ante from the growth table: {'; '.join(problems[:5])}{more}")
    return out
