"""Date and time functions (emqx_rule_funcs, emqx_utils_calendar).

Units are "second", "millisecond", "microsecond", "nanosecond". RFC 3339
output uses the machine's local offset, as Erlang's calendar does
("+00:00" on a UTC machine, never "Z"). format_date/date_to_unix_ts use
EMQX's own directives: %Y %m %d %H %M %S %N (9 digits) %3N %6N %z
(+0800) %:z (+08:00) %::z (+08:00:00); any other character is literal,
and, as in EMQX, literal characters in date_to_unix_ts are skipped by
length, not compared ("%H-%M" reads "10:40").
"""

from __future__ import annotations

import re
import time
from typing import Any

from rules.functions_base import (
    ABSENT,
    ArgError,
    Function,
    describe,
    func,
    integer,
    text,
)
from rules.values import UNDEFINED

_UNITS = {"second": 1, "millisecond": 1_000, "microsecond": 1_000_000, "nanosecond": 1_000_000_000}
_FRACTION_DIGITS = {1: 0, 1_000: 3, 1_000_000: 6, 1_000_000_000: 9}
_MIN_SECS, _MAX_SECS = -62_167_219_200, 253_402_300_800  # years 0 to 9999, as EMQX checks


def unit_factor(unit: Any) -> int:
    factor = _UNITS.get(unit) if type(unit) is str else None
    if factor is None:
        raise ArgError(f"expected a time unit ({', '.join(_UNITS)}), got {describe(unit)}")
    return factor


def now_in(factor: int) -> int:
    return time.time_ns() // (1_000_000_000 // factor)


def local_offset(epoch_seconds: int) -> int:
    """The machine's UTC offset in seconds at that moment (tests replace this)."""
    try:
        return time.localtime(epoch_seconds).tm_gmtoff
    except (OverflowError, OSError, ValueError):
        return time.localtime().tm_gmtoff


# --- civil dates (proleptic Gregorian, any year; after H. Hinnant's algorithms) -------------


def days_from_civil(y: int, m: int, d: int) -> int:
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _seconds(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and 0 <= h <= 23 and 0 <= mi <= 59 and 0 <= s <= 59):
        raise ArgError(f"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} is not a valid date and time")
    return days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s


def _split_seconds(secs: int) -> tuple[int, int, int, int, int, int]:
    days, rest = divmod(secs, 86_400)
    y, mo, d = civil_from_days(days)
    return y, mo, d, rest // 3600, rest // 60 % 60, rest % 60


# --- offsets -----------------------------------------------------------------------------------

_OFFSET = re.compile(r"([+-])(?:([0-9]+):([0-9]+)(?::([0-9]+))?|([0-9]{2})([0-9]{2}))")


def offset_seconds(offset: Any) -> int:
    """EMQX's timezone offsets: seconds, undefined (0), "local", "Z", "+08:00", "+08:00:00", "+0800"."""
    if type(offset) is int:
        return offset
    if offset is UNDEFINED:
        return 0
    if type(offset) is str:
        if offset == "local":
            return local_offset(int(time.time()))
        if offset in ("Z", "z"):
            return 0
        m = _OFFSET.fullmatch(offset)
        if m:
            h, mi, s = (int(x or 0) for x in (m[2] or m[5], m[3] or m[6], m[4]))
            if h <= 23 and mi <= 59 and s <= 59:
                return (-1 if m[1] == "-" else 1) * (h * 3600 + mi * 60 + s)
    raise ArgError(f'expected a time offset such as "+08:00", "Z" or "local", got {describe(offset)}')


def _offset_text(offset: int, style: str) -> str:
    sign = "+" if offset >= 0 else "-"
    h, rest = divmod(abs(offset), 3600)
    mi, s = divmod(rest, 60)
    if style == "timezone":
        return f"{sign}{h:02}{mi:02}"
    if style == "timezone1":
        return f"{sign}{h:02}:{mi:02}"
    return f"{sign}{h:02}:{mi:02}:{s:02}"


# --- RFC 3339 --------------------------------------------------------------------------------


_last_second: list[Any] = [None, None, ""]  # (seconds, local_offset used, text): now_rfc3339() per message


def to_rfc3339(epoch: int, factor: int) -> str:
    if factor == 1:
        last = _last_second
        if last[0] == epoch and last[1] is local_offset:
            return last[2]
        last[2] = _to_rfc3339(epoch, 1)
        last[0], last[1] = epoch, local_offset
        return last[2]
    return _to_rfc3339(epoch, factor)


def _to_rfc3339(epoch: int, factor: int) -> str:
    secs, fraction = divmod(epoch, factor)
    offset = local_offset(secs)
    y, mo, d, h, mi, s = _split_seconds(secs + offset)
    if not 0 <= y <= 9999:
        raise ArgError(f"timestamp {epoch} is outside the years 0 to 9999")
    digits = _FRACTION_DIGITS[factor]
    frac = f".{fraction:0{digits}}" if digits else ""
    return f"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{_offset_text(offset, 'timezone1')}"


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def from_rfc3339(value: str, factor: int) -> int:
    m = _RFC3339.fullmatch(value)
    if not m:
        raise ArgError(f"{describe(value)} is not an RFC 3339 date-time")
    secs = _seconds(*(int(m[i]) for i in range(1, 7))) - offset_seconds(m[8])
    digits = _FRACTION_DIGITS[factor]
    fraction = int((m[7] or "").ljust(digits, "0")[:digits] or 0)  # finer digits are cut off
    return secs * factor + fraction


def _now_timestamp(unit: Any = "second") -> int:
    return now_in(unit_factor(unit))


def _now_rfc3339(unit: Any = "second") -> str:
    factor = unit_factor(unit)
    return to_rfc3339(now_in(factor), factor)


def _unix_ts_to_rfc3339(epoch: Any, unit: Any = "second") -> str:
    return to_rfc3339(integer(epoch, "an integer timestamp"), unit_factor(unit))


def _rfc3339_to_unix_ts(value: Any, unit: Any = "second") -> int:
    return from_rfc3339(text(value, "an RFC 3339 date-time"), unit_factor(unit))


# --- format_date / date_to_unix_ts -----------------------------------------------------------

_DIRECTIVES = {
    "%Y": ("year", 4), "%m": ("month", 2), "%d": ("day", 2), "%H": ("hour", 2),
    "%M": ("minute", 2), "%S": ("second", 2), "%N": ("nanosecond", 9),
    "%3N": ("millisecond", 3), "%6N": ("microsecond", 6),
    "%z": ("timezone", 5), "%:z": ("timezone1", 6), "%::z": ("timezone2", 9),
}  # fmt: skip
_DIRECTIVE = re.compile("|".join(re.escape(d) for d in sorted(_DIRECTIVES, key=len, reverse=True)))
_SUBSECOND = {"millisecond": 1_000, "microsecond": 1_000_000, "nanosecond": 1_000_000_000}


def _formatter(fmt: str) -> list[tuple[str, int] | str]:
    """Directives as (part, width) and literal text as str."""
    out: list[tuple[str, int] | str] = []
    pos = 0
    for m in _DIRECTIVE.finditer(fmt):
        if m.start() > pos:
            out.append(fmt[pos : m.start()])
        out.append(_DIRECTIVES[m[0]])
        pos = m.end()
    if pos < len(fmt):
        out.append(fmt[pos:])
    return out


def _format_date(unit: Any, offset: Any, fmt: Any, epoch: Any = ABSENT) -> str:
    """format_date(unit, offset, format[, timestamp]): the timestamp (default now) as text."""
    factor = unit_factor(unit)
    offset = offset_seconds(offset)
    parts = _formatter(text(fmt, "a format string"))
    epoch = now_in(factor) if epoch is ABSENT else integer(epoch, "an integer timestamp")
    y, mo, d, h, mi, s = _split_seconds((epoch + offset * factor) // factor)
    values = {"year": y, "month": mo, "day": d, "hour": h, "minute": mi, "second": s}
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        name, width = part
        if name in values:
            out.append(f"{values[name]:0{width}}")
        elif name in _SUBSECOND:
            out.append(f"{epoch % factor * _SUBSECOND[name] // factor:0{width}}")
        else:
            out.append(_offset_text(offset, name))
    return "".join(out)


def _date_to_unix_ts(unit: Any, a: Any, b: Any, c: Any = ABSENT) -> int:
    """date_to_unix_ts(unit, [offset,] format, date): the date read with the format."""
    offset, fmt, date = (0, a, b) if c is ABSENT else (offset_seconds(a), b, c)
    factor = unit_factor(unit)
    fmt, date = text(fmt, "a format string"), text(date, "a date string")
    found: dict[str, int] = {}
    pos = 0
    for part in _formatter(fmt):
        if pos >= len(date):
            break
        width = len(part) if isinstance(part, str) else part[1]
        chunk = date[pos : pos + width]
        if len(chunk) < width:
            raise ArgError(f"the date {describe(date)} is shorter than the format {describe(fmt)}")
        pos += width
        if type(part) is str:
            continue  # literals are skipped by length, not compared (EMQX 4.x compatibility)
        name = part[0]
        if name.startswith("timezone"):
            found["offset"] = offset_seconds(chunk)
        elif re.fullmatch(r"[+-]?[0-9]+", chunk):
            found[name] = int(chunk)
        else:
            raise ArgError(f"the date {describe(date)} does not match the format {describe(fmt)}")
    for name in ("year", "month", "day", "hour", "minute", "second"):
        if name not in found:
            raise ArgError(f"the format {describe(fmt)} gives no {name}")
    secs = _seconds(*(found[n] for n in ("year", "month", "day", "hour", "minute", "second"))) - found.get("offset", 0)
    if not _MIN_SECS <= secs < _MAX_SECS:
        raise ArgError(f"the date {describe(date)} is outside the years 0 to 9999")
    precision = max((_SUBSECOND[n] for n in _SUBSECOND if n in found), default=1)
    total = secs * precision + sum(found[n] * precision // f for n, f in _SUBSECOND.items() if n in found)
    return total * factor // precision - offset * factor


def _timezone_to_offset_seconds(offset: Any) -> int:
    return offset_seconds(offset)


FUNCS: list[Function] = [
    func("now_timestamp", _now_timestamp, 0, 1),
    func("now_rfc3339", _now_rfc3339, 0, 1),
    func("unix_ts_to_rfc3339", _unix_ts_to_rfc3339, 1, 2),
    func("rfc3339_to_unix_ts", _rfc3339_to_unix_ts, 1, 2),
    func("format_date", _format_date, 3, 4),
    func("date_to_unix_ts", _date_to_unix_ts, 3, 4),
    func("timezone_to_second", _timezone_to_offset_seconds, 1),
    func("timezone_to_offset_seconds", _timezone_to_offset_seconds, 1),
]
