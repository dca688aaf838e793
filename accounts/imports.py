"""CSV import: validate the whole file with pandas, then load it with COPY and one set-based upsert.

Two layers. The parsing layer (`read_chunks`, `validate_frame`, `duplicate_errors`) turns raw
strings into clean, typed frames plus a frame of row-numbered errors; it needs no database, only
the organization's lookups (`ImportLookups`). The service `csv_import` runs it chunk by chunk,
streams clean chunks into a temporary table with COPY while the next chunk is validated, and
finishes with one `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT FROM`, so a file that
has already been imported rewrites nothing. (COPY cannot go straight into the real tables:
PostgreSQL refuses COPY FROM into a table with Row Level Security, and COPY cannot upsert.)
Any bad row rejects the whole file: the transaction is rolled back and every error is reported
with its spreadsheet row number (the header is row 1).

Formats: ARCHITECTURE.md, "CSV formats".
"""

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from django.db import connection, transaction

from accounts.models import (
    Account,
    ActivityKind,
    Direction,
    InvoiceStatus,
    Membership,
    Organization,
    Side,
    Stage,
    TaskStatus,
    TicketPriority,
    TicketStatus,
)
from csm.tenancy import tenant

# Big enough that pandas' per-call overhead vanishes, small enough that the server digests one chunk
# of COPY while Python validates the next, and memory stays bounded on million-row files.
CHUNK_ROWS = 200_000
# Errors beyond this are counted but not kept: nobody reads the 5,000th line of the same mistake.
MAX_LISTED_ERRORS = 1_000

Progress = Callable[[str, int, int | None], None]
"""Called as progress(stage, rows_done, rows_total) while an import runs."""


# --- results and errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int | None  # the spreadsheet's row number (header = 1); None for a problem with the whole file
    column: str | None
    message: str

    def __str__(self) -> str:
        if self.row is None:
            return self.message
        if self.column is None:
            return f"row {self.row}: {self.message}"
        return f"row {self.row}, column {self.column}: {self.message}"


class CsvImportError(Exception):
    """The file was rejected; nothing was written. `errors` lists the first problems, `count` all of them."""

    def __init__(self, errors: list[RowError], count: int | None = None):
        self.errors = errors
        self.count = len(errors) if count is None else count
        noun = "error" if self.count == 1 else "errors"
        super().__init__(f"{self.count:,} {noun}; nothing was imported")


@dataclass(frozen=True)
class ImportResult:
    kind: str
    rows: int
    created: int
    updated: int
    unchanged: int

    def __str__(self) -> str:
        return (
            f"Imported {self.rows:,} {self.kind} rows: {self.created:,} created, "
            f"{self.updated:,} updated, {self.unchanged:,} unchanged."
        )


# --- column formats -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # text | lower | currency | int | decimal | date | timestamp | enum | bool | csat | account | member
    required: bool = False
    max_length: int | None = None
    choices: type | None = None  # a TextChoices, for enums
    default: object = None  # what an empty optional value becomes
    minimum: float | None = None  # for numbers


def _id(name: str = "external_id") -> Column:
    return Column(name, "text", required=True, max_length=100)


_ACCOUNT = Column("account_external_id", "account", required=True)

# "Required": every id, the account reference, accounts' name, title, owner_side, status and the
# first date column of each kind (ARCHITECTURE.md) where that date is the record's own moment
# (usage day, activity, ticket, invoice). An account not yet scheduled to go live and a MAP task
# without a due date are ordinary, so go_live_date and due_date may be empty.
FORMATS: dict[str, tuple[Column, ...]] = {
    "accounts": (
        _id(),
        Column("name", "text", required=True, max_length=200),
        Column("domain", "lower", max_length=200, default=""),
        Column("tier", "lower", max_length=50, default=""),
        Column("arr", "decimal", default="0", minimum=0),
        Column("currency", "currency", default="USD"),
        Column("plan", "text", max_length=100, default=""),
        Column("seat_limit", "int", minimum=0),
        Column("stage", "enum", choices=Stage, default=Stage.ONBOARDING.value),
        Column("csm_email", "member"),
        Column("am_email", "member"),
        Column("go_live_date", "date"),
        Column("renewal_date", "date"),
        Column("contract_start", "date"),
        Column("created_at", "timestamp"),
    ),
    "contacts": (
        _id(),
        _ACCOUNT,
        Column("name", "text", max_length=200, default=""),
        Column("email", "lower", max_length=254, default=""),
        Column("phone", "text", max_length=50, default=""),
        # The contact's job title, not the task title the required rule speaks of.
        Column("title", "text", max_length=200, default=""),
        Column("is_champion", "bool", default=False),
    ),
    "tasks": (
        _id(),
        _ACCOUNT,
        Column("title", "text", required=True, max_length=300),
        Column("owner_side", "enum", required=True, choices=Side),
        Column("status", "enum", required=True, choices=TaskStatus),
        Column("due_date", "date"),
        Column("created_at", "timestamp"),
        Column("status_changed_at", "timestamp"),
        Column("completed_at", "timestamp"),
        Column("verified_by_client", "bool", default=False),
    ),
    "activities": (
        _id(),
        _ACCOUNT,
        Column("occurred_at", "timestamp", required=True),
        # Required although not listed: the timeline cannot tell a login from a call without it.
        Column("kind", "enum", required=True, choices=ActivityKind),
        Column("direction", "enum", choices=Direction, default=""),
        Column("actor_side", "enum", choices=Side, default=""),
        Column("summary", "text", default=""),
    ),
    "usage": (
        _ACCOUNT,
        Column("date", "date", required=True),
        Column("active_users", "int", default=0, minimum=0),
        Column("seats_used", "int", default=0, minimum=0),
        Column("events", "int", default=0, minimum=0),
    ),
    "tickets": (
        _id(),
        _ACCOUNT,
        Column("opened_at", "timestamp", required=True),
        Column("status", "enum", required=True, choices=TicketStatus),
        Column("priority", "enum", choices=TicketPriority, default=TicketPriority.NORMAL.value),
        Column("solved_at", "timestamp"),
        Column("csat", "csat"),
        Column("subject", "text", max_length=300, default=""),
    ),
    "invoices": (
        _id(),
        _ACCOUNT,
        Column("issued_at", "date", required=True),
        Column("amount", "decimal", default="0"),
        Column("currency", "currency", default="USD"),
        Column("status", "enum", required=True, choices=InvoiceStatus),
        Column("due_date", "date"),
        Column("paid_at", "timestamp"),
    ),
}
KINDS = tuple(FORMATS)
# What makes a row the same row on re-import (after org_id); usage has no id of its own.
KEYS: dict[str, tuple[str, ...]] = {kind: ("external_id",) for kind in KINDS} | {
    "usage": ("account_external_id", "date")
}
_INT_MAX = 2**31 - 1
_DECIMAL_LIMIT = 10**12  # DecimalField(max_digits=14, decimal_places=2)
_CSAT_LIMIT = 1_000  # DecimalField(max_digits=5, decimal_places=2)
_CSAT_WORDS = {"good": "5", "bad": "1"}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = (
    r"^(?P<local>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?)"
    r"\s*(?P<offset>[Zz]|(?P<sign>[+-])(?P<hours>\d{2}):?(?P<minutes>\d{2})?)?$"
)
_EXPECTED = {
    "date": "is not a date (expected YYYY-MM-DD)",
    "timestamp": "is not a date or time (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], optionally with +HH:MM)",
    "int": "is not a whole number of 0 or more",
    "decimal": "is not a number (expected digits with an optional decimal point, e.g. 1250.50)",
    "currency": "is not a currency code (expected 3 letters, e.g. USD)",
    "bool": "is not a yes/no value (expected true/false, yes/no or 1/0)",
    "csat": "is not a satisfaction score (expected a number, good or bad)",
    "account": "is not an account of this organization (import accounts first)",
    "member": "is not a member of this organization",
}


def _normalized_choice(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def _choice_aliases(choices) -> dict[str, str]:
    # "In progress", "in-progress" and "IN_PROGRESS" are all in_progress; labels count too ("To do").
    aliases = {}
    for value, label in choices.choices:
        aliases[_normalized_choice(str(label))] = value
        aliases[_normalized_choice(value)] = value
    return aliases


# --- the parsing layer --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportLookups:
    """What validation needs from the organization: its time zone, accounts and members."""

    tz: object  # a tzinfo; naive timestamps are local to the organization
    account_ids: dict[str, int] = field(default_factory=dict)  # external_id -> Account.pk
    member_ids: dict[str, int] = field(default_factory=dict)  # lowercased e-mail -> user pk


@dataclass
class ParsedChunk:
    clean: pd.DataFrame
    errors: pd.DataFrame  # row, column, message, position (the column's place, to sort by)


def _error_frame(rows, column: str | None, messages, position: int) -> pd.DataFrame:
    return pd.DataFrame({"row": rows, "column": column, "message": messages, "position": position})


EMPTY_ERRORS = _error_frame(pd.Series([], dtype="int64"), None, pd.Series([], dtype=object), 0)


def header_errors(kind: str, header: list[str]) -> list[RowError]:
    """A header must name each column of the kind exactly once, in any order."""
    expected = [column.name for column in FORMATS[kind]]
    if len(header) == 1:
        # One column holding several names: a spreadsheet that saved with its local separator.
        for separator, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if separator in header[0]:
                return [
                    RowError(
                        1,
                        None,
                        f"the columns are separated by {label}, not commas: save the file as CSV with commas "
                        f"(CSV UTF-8); its first row must be: {', '.join(expected)}",
                    )
                ]
    errors = []
    seen = set()
    for name in header:
        if name in seen:
            errors.append(RowError(1, name, "appears twice in the header"))
        seen.add(name)
    unknown = [name for name in header if name not in expected]
    missing = [name for name in expected if name not in seen]
    for name in unknown:
        label = name or "(empty)"
        errors.append(RowError(1, label, f"is not a column of {kind} files (expected: {', '.join(expected)})"))
    for name in missing:
        errors.append(RowError(1, name, f"is missing from the header (expected: {', '.join(expected)})"))
    return errors


def read_chunks(file: str | Path | IO[bytes], kind: str, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the file's data rows as frames of raw strings, indexed by their spreadsheet row number.

    Raises CsvImportError for an unreadable file or a wrong header.
    """
    try:
        reader = pd.read_csv(
            file,
            header=None,  # the header is checked by hand: pandas would rename a repeated column
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,  # keeps row numbers equal to what a spreadsheet shows
            encoding="utf-8-sig",  # drops a byte-order mark if there is one
            chunksize=chunk_rows,
        )
        header = None
        for chunk in reader:
            chunk.index = chunk.index + 1  # pandas counts from 0 and the header is row 1
            if header is None:
                header = [str(name).strip().lower() for name in chunk.iloc[0]]
                errors = header_errors(kind, header)
                if errors:
                    raise CsvImportError(errors)
                chunk = chunk.iloc[1:]
            chunk.columns = header
            # Blank lines (often trailing) are not rows of data; they still count for numbering.
            blank = (chunk == "").all(axis=1)
            yield chunk[~blank] if blank.any() else chunk
    except pd.errors.EmptyDataError as error:
        expected = ", ".join(column.name for column in FORMATS[kind])
        raise CsvImportError([RowError(None, None, f"The file is empty; its first row must be: {expected}")]) from error
    except UnicodeDecodeError as error:
        raise CsvImportError(
            [RowError(None, None, "The file is not UTF-8 text; save it as “CSV UTF-8” and try again.")]
        ) from error
    except pd.errors.ParserError as error:
        raise CsvImportError([_parser_error(str(error))]) from error


def _parser_error(message: str) -> RowError:
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if found:
        expected, line, saw = (int(group) for group in found.groups())
        return RowError(
            line,
            None,
            f"has {saw} values but the header has {expected} columns "
            "(put values that contain commas in double quotes); the file was not read past this row",
        )
    if "EOF inside string" in message:
        return RowError(None, None, "A double quote is never closed; check the quotes in the file.")
    return RowError(None, None, f"The file could not be read as CSV: {message}")


def _parse_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """YYYY-MM-DD strings; returns (values, bad). Runs on distinct values, so a loop is cheap."""

    def valid(text: str) -> bool:
        if not _DATE.fullmatch(text):
            return False
        try:
            date.fromisoformat(text)
        except ValueError:
            return False
        return True

    bad = ~np.fromiter((valid(text) for text in values), dtype=bool, count=len(values))
    return values, pd.Series(bad, index=values.index)


def _parse_timestamps(values: pd.Series, tz) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 date or date-time; without an offset it is local to `tz` (a date alone is local midnight)."""
    parts = values.str.extract(_TIMESTAMP)
    local = pd.to_datetime(parts["local"], format="ISO8601", errors="coerce")
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    naive = local.notna() & parts["offset"].isna()
    if naive.any():
        # Ambiguous wall times (the repeated hour when clocks go back) take the first, summer-time
        # instant, like Python's fold=0; times skipped when clocks go forward move past the gap.
        localized = local[naive].dt.tz_localize(
            tz, ambiguous=np.ones(int(naive.sum()), dtype=bool), nonexistent="shift_forward"
        )
        result[naive] = localized.dt.tz_convert("UTC")
    offset = local.notna() & parts["offset"].notna()
    if offset.any():
        sign = np.where(parts.loc[offset, "sign"] == "-", -1, 1)
        minutes = parts.loc[offset, "hours"].fillna("0").astype(int) * 60 + parts.loc[offset, "minutes"].fillna(
            "0"
        ).astype(int)
        utc = local[offset] - pd.to_timedelta(sign * minutes, unit="m")
        result[offset] = utc.dt.tz_localize("UTC")
    return result, result.isna()


def _parse_numbers(values: pd.Series, *, integer: bool, minimum, limit) -> tuple[pd.Series, pd.Series]:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | ~np.isfinite(numbers) | (numbers.abs() >= limit)
    if integer:
        bad |= numbers % 1 != 0
    if minimum is not None:
        bad |= numbers < minimum
    if integer:
        return numbers.where(~bad, 0).astype("int64"), bad
    # Decimals keep their text: PostgreSQL reads it exactly, a float would not.
    return values, bad


def _parse_distinct(column: Column, values: pd.Series, lookups: ImportLookups) -> tuple[pd.Series, pd.Series]:
    """Parse non-empty, stripped, distinct values of one column; returns (parsed, bad)."""
    kind = column.type
    if kind == "text":
        return values, pd.Series(False, index=values.index)
    if kind == "lower":
        return values.str.lower(), pd.Series(False, index=values.index)
    if kind == "currency":
        return values.str.upper(), ~values.str.fullmatch(r"[A-Za-z]{3}")
    if kind == "date":
        return _parse_dates(values)
    if kind == "timestamp":
        return _parse_timestamps(values, lookups.tz)
    if kind == "int":
        return _parse_numbers(values, integer=True, minimum=column.minimum, limit=_INT_MAX + 1)
    if kind == "decimal":
        return _parse_numbers(values, integer=False, minimum=column.minimum, limit=_DECIMAL_LIMIT)
    if kind == "csat":
        words = values.str.lower().map(_CSAT_WORDS)
        numbers, bad = _parse_numbers(values, integer=False, minimum=0, limit=_CSAT_LIMIT)
        return words.fillna(numbers), bad & words.isna()
    if kind == "enum":
        parsed = values.map(_normalized_choice).map(_choice_aliases(column.choices))
        return parsed, parsed.isna()
    if kind == "bool":
        lowered = values.str.lower()
        return lowered.isin(_TRUE), ~(lowered.isin(_TRUE) | lowered.isin(_FALSE))
    if kind == "account":
        parsed = values.map(lookups.account_ids)
        return parsed, parsed.isna()
    if kind == "member":
        parsed = values.str.lower().map(lookups.member_ids)
        return parsed, parsed.isna()
    raise ValueError(f"unknown column type {kind!r}")


def _expected_message(column: Column) -> str:
    if column.type == "enum":
        return "is not one of: " + ", ".join(column.choices.values)
    return _EXPECTED.get(column.type, "is not valid")


def _quoted(values: pd.Series) -> pd.Series:
    return '"' + values.str.slice(0, 80) + '"'


def validate_frame(kind: str, raw: pd.DataFrame, lookups: ImportLookups) -> ParsedChunk:
    """Turn one chunk of raw strings into typed, clean columns and a frame of errors (vectorized)."""
    clean = {}
    errors = []
    for position, column in enumerate(FORMATS[kind]):
        # Work on distinct values: a million usage rows hold a few hundred dates and accounts.
        codes, distinct = pd.factorize(raw[column.name], sort=False)
        stripped = pd.Series(distinct, dtype=object).str.strip()
        empty = (stripped == "").to_numpy()
        parsed, bad = _parse_distinct(column, stripped[~empty], lookups)
        bad_distinct = np.zeros(len(stripped), dtype=bool)
        bad_distinct[~empty] = bad.to_numpy(dtype=bool)
        too_long = np.zeros(len(stripped), dtype=bool)
        if column.max_length is not None:
            too_long[~empty] = (stripped[~empty].str.len() > column.max_length).to_numpy()
        missing_rows = empty[codes] if column.required else np.zeros(len(codes), dtype=bool)
        bad_rows = bad_distinct[codes]
        long_rows = too_long[codes] & ~bad_rows
        if missing_rows.any():
            errors.append(_error_frame(raw.index[missing_rows], column.name, "missing value (required)", position))
        if bad_rows.any():
            messages = _quoted(raw[column.name][bad_rows].str.strip()) + " " + _expected_message(column)
            errors.append(_error_frame(raw.index[bad_rows], column.name, messages.to_numpy(), position))
        if long_rows.any():
            messages = (
                _quoted(raw[column.name][long_rows].str.strip()) + f" is longer than {column.max_length} characters"
            )
            errors.append(_error_frame(raw.index[long_rows], column.name, messages.to_numpy(), position))
        # Map distinct parsed values back onto the rows; empty cells take the column's default.
        full = pd.Series(column.default, index=stripped.index, dtype=_frame_dtype(column))
        full[~empty] = parsed.array
        clean[column.name] = full.take(codes).set_axis(raw.index)
        if column.type == "account":
            clean[column.name + "__raw"] = stripped.take(codes).set_axis(raw.index)
    frame = pd.DataFrame(clean, index=raw.index)
    found = pd.concat(errors, ignore_index=True) if errors else EMPTY_ERRORS
    return ParsedChunk(clean=frame, errors=found)


def _frame_dtype(column: Column):
    if column.type == "timestamp":
        return "datetime64[ns, UTC]"
    if column.type in ("int", "account", "member"):
        # Nullable integers: an empty seat limit or owner stays NULL rather than becoming 0.0.
        return "Int64"
    if column.type == "bool":
        return bool
    return object


def duplicate_errors(kind: str, keys: pd.DataFrame) -> pd.DataFrame:
    """Rows that repeat an earlier row's key (external_id; usage: account and date)."""
    key = list(keys.columns.drop("row"))
    repeated = keys.duplicated(key, keep=False)
    if not repeated.any():
        return EMPTY_ERRORS
    group = keys[repeated].copy()
    group["first"] = group.groupby(key, sort=False)["row"].transform("min")
    later = group[group["row"] != group["first"]]
    shown = later[key[0]].astype(str) if len(key) == 1 else later[key[0]].astype(str) + ", " + later[key[1]]
    what = "external_id" if len(key) == 1 else "account and date"
    messages = '"' + shown + '" repeats row ' + later["first"].astype(str) + f" (each {what} once per file)"
    column = key[0] if len(key) == 1 else "account_external_id, date"
    position = [c.name for c in FORMATS[kind]].index(key[-1])
    return _error_frame(later["row"].to_numpy(), column, messages.to_numpy(), position)


def _key_frame(kind: str, clean: pd.DataFrame) -> pd.DataFrame:
    # Usage rows are keyed by the account as written, so the error can quote it.
    names = ["account_external_id__raw" if name == "account_external_id" else name for name in KEYS[kind]]
    keys = clean[names].set_axis(KEYS[kind], axis=1)
    keys["row"] = clean.index.to_numpy()
    return keys


def listed_errors(errors: pd.DataFrame, limit: int = MAX_LISTED_ERRORS) -> list[RowError]:
    ordered = errors.sort_values(["row", "position"], kind="stable").head(limit)
    return [
        RowError(int(row), column, message)
        for row, column, message in zip(ordered["row"], ordered["column"], ordered["message"], strict=True)
    ]


# --- loading ------------------------------------------------------------------------------------

# The staging table's columns: (name, SQL type), in COPY order, per kind.
_STAGING: dict[str, tuple[tuple[str, str], ...]] = {
    "accounts": (
        ("external_id", "text"),
        ("name", "text"),
        ("domain", "text"),
        ("tier", "text"),
        ("arr", "numeric"),
        ("currency", "text"),
        ("plan", "text"),
        ("seat_limit", "integer"),
        ("stage", "text"),
        ("csm_id", "bigint"),
        ("am_id", "bigint"),
        ("go_live_date", "date"),
        ("renewal_date", "date"),
        ("contract_start", "date"),
        ("created_at", "timestamptz"),
    ),
    "contacts": (
        ("external_id", "text"),
        ("account_id", "bigint"),
        ("name", "text"),
        ("email", "text"),
        ("phone", "text"),
        ("title", "text"),
        ("is_champion", "boolean"),
    ),
    "tasks": (
        ("external_id", "text"),
        ("account_id", "bigint"),
        ("title", "text"),
        ("owner_side", "text"),
        ("status", "text"),
        ("due_date", "date"),
        ("created_at", "timestamptz"),
        ("status_changed_at", "timestamptz"),
        ("completed_at", "timestamptz"),
        ("verified_by_client", "boolean"),
    ),
    "activities": (
        ("external_id", "text"),
        ("account_id", "bigint"),
        ("occurred_at", "timestamptz"),
        ("kind", "text"),
        ("direction", "text"),
        ("actor_side", "text"),
        ("summary", "text"),
    ),
    "usage": (
        ("account_id", "bigint"),
        ("date", "date"),
        ("active_users", "integer"),
        ("seats_used", "integer"),
        ("events", "integer"),
    ),
    "tickets": (
        ("external_id", "text"),
        ("account_id", "bigint"),
        ("opened_at", "timestamptz"),
        ("status", "text"),
        ("priority", "text"),
        ("solved_at", "timestamptz"),
        ("csat", "numeric"),
        ("subject", "text"),
    ),
    "invoices": (
        ("external_id", "text"),
        ("account_id", "bigint"),
        ("issued_at", "date"),
        ("amount", "numeric"),
        ("currency", "text"),
        ("status", "text"),
        ("due_date", "date"),
        ("paid_at", "timestamptz"),
    ),
}
_TABLES = {
    "accounts": "accounts_account",
    "contacts": "accounts_contact",
    "tasks": "accounts_task",
    "activities": "accounts_activity",
    "usage": "accounts_usageday",
    "tickets": "accounts_ticket",
    "invoices": "accounts_invoice",
}
# NOT NULL columns the files do not carry: set on insert, left alone on update.
_INSERT_ONLY = {"tasks": {"blocked_reason": "''"}, "activities": {"actor_name": "''"}}
_RENAMED = {"account_external_id": "account_id", "csm_email": "csm_id", "am_email": "am_id"}
_STAGING_TABLE = "csv_import_staging"


def _staging_frame(kind: str, clean: pd.DataFrame) -> pd.DataFrame:
    columns = [name for name, _ in _STAGING[kind]]
    return clean.rename(columns=_RENAMED)[columns]


def _create_staging(cursor, kind: str) -> None:
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in _STAGING[kind])
    # Dropped first: two imports may share one outer transaction (tests, a future batch command).
    cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{_STAGING_TABLE}")
    cursor.execute(f"CREATE TEMPORARY TABLE {_STAGING_TABLE} ({columns}) ON COMMIT DROP")


# Kinds whose staging columns are all fixed-width and never NULL once validated (usage) go to the
# server in PostgreSQL's binary COPY format, built with numpy: for a million rows that is a tenth of
# a second where pandas' to_csv takes seconds, and the server has no text to parse.
_BINARY_TYPES = {"bigint": ">i8", "integer": ">i4", "date": ">i4"}
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no extension
_PG_EPOCH_DAYS = 10_957  # PostgreSQL counts dates from 2000-01-01, numpy from 1970-01-01


def _binary_copy(kind: str) -> bool:
    return all(sql_type in _BINARY_TYPES for _, sql_type in _STAGING[kind])


def _copy_sql(kind: str) -> str:
    names = [name for name, _ in _STAGING[kind]]
    if _binary_copy(kind):
        return f"COPY {_STAGING_TABLE} ({', '.join(names)}) FROM STDIN (FORMAT binary)"
    text = [name for name, sql_type in _STAGING[kind] if sql_type == "text"]
    # Text columns read an empty field as '' (the models store blank, not NULL, for those).
    force = f", FORCE_NOT_NULL ({', '.join(text)})" if text else ""
    return f"COPY {_STAGING_TABLE} ({', '.join(names)}) FROM STDIN (FORMAT csv{force})"


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, header=False).encode()


def _binary_bytes(kind: str, frame: pd.DataFrame) -> bytes:
    """Rows in binary COPY format: per row a field count, then each field's length and big-endian value."""
    layout = [("fields", ">i2")]
    for name, sql_type in _STAGING[kind]:
        layout += [(f"{name}.length", ">i4"), (name, _BINARY_TYPES[sql_type])]
    rows = np.empty(len(frame), dtype=layout)
    rows["fields"] = len(_STAGING[kind])
    for name, sql_type in _STAGING[kind]:
        rows[f"{name}.length"] = np.dtype(_BINARY_TYPES[sql_type]).itemsize
        if sql_type == "date":
            codes, distinct = pd.factorize(frame[name])
            days = np.array(distinct, dtype="datetime64[D]").astype(np.int64) - _PG_EPOCH_DAYS
            rows[name] = days[codes]
        else:
            rows[name] = frame[name].to_numpy(dtype=np.int64)
    return rows.tobytes()


def _upsert_sql(kind: str) -> str:
    """One INSERT ... ON CONFLICT for the kind; rows equal to what is stored are left alone."""
    table = _TABLES[kind]
    key = ["account_id", "date"] if kind == "usage" else ["external_id"]
    columns = [name for name, _ in _STAGING[kind]]
    selected = [("COALESCE(s.created_at, now())" if name == "created_at" else f"s.{name}") for name in columns]
    updated = [name for name in columns if name not in key]
    incoming_values = [expression for name, expression in zip(columns, selected, strict=True) if name not in key]
    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name in updated)
    current = ", ".join(f"cur.{name}" for name in updated)
    incoming = ", ".join(f"EXCLUDED.{name}" for name in updated)
    extra = _INSERT_ONLY.get(kind, {})
    inserted = columns + list(extra)
    selected += list(extra.values())
    return f"""
        WITH upserted AS (
            INSERT INTO {table} AS cur (org_id, {", ".join(inserted)})
            SELECT %(org_id)s, {", ".join(selected)} FROM {_STAGING_TABLE} s
            -- Rows equal to the stored ones never reach ON CONFLICT, which would lock (and so
            -- write) every one of them even when its WHERE leaves the row alone.
            WHERE NOT EXISTS (
                SELECT 1 FROM {table} t
                WHERE t.org_id = %(org_id)s AND {" AND ".join(f"t.{name} = s.{name}" for name in key)}
                AND ({", ".join(f"t.{name}" for name in updated)}) IS NOT DISTINCT FROM ({", ".join(incoming_values)})
            )
            ON CONFLICT (org_id, {", ".join(key)}) DO UPDATE SET {sets}
            WHERE ({current}) IS DISTINCT FROM ({incoming})
            RETURNING cur.xmax = 0 AS created
        )
        SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
    """


def _accounts_upsert_sql() -> str:
    """Accounts also keep churned_on and the ARR history (ArrChange) in step with the file."""
    columns = [name for name, _ in _STAGING["accounts"]]
    updated = [name for name in columns if name != "external_id"]
    # churned_on is not in the file: it is today when an account becomes churned, kept while it
    # stays churned, and cleared when it comes back.
    churned_on = "CASE WHEN EXCLUDED.stage = 'churned' THEN COALESCE(cur.churned_on, EXCLUDED.churned_on) END"
    sets = ", ".join(f"{name} = EXCLUDED.{name}" for name in updated)
    current = ", ".join(f"cur.{name}" for name in updated)
    incoming = ", ".join(f"EXCLUDED.{name}" for name in updated)
    selected = ", ".join("COALESCE(s.created_at, now())" if name == "created_at" else f"s.{name}" for name in columns)
    return f"""
        WITH previous AS (
            SELECT a.id, a.arr FROM accounts_account a
            JOIN {_STAGING_TABLE} s ON s.external_id = a.external_id
            WHERE a.org_id = %(org_id)s
        ), upserted AS (
            INSERT INTO accounts_account AS cur (org_id, {", ".join(columns)}, churned_on, updated_at)
            SELECT %(org_id)s, {selected}, CASE WHEN s.stage = 'churned' THEN %(today)s::date END, now()
            FROM {_STAGING_TABLE} s
            ON CONFLICT (org_id, external_id) DO UPDATE SET {sets}, churned_on = {churned_on}, updated_at = now()
            WHERE ({current}, cur.churned_on) IS DISTINCT FROM ({incoming}, {churned_on})
            RETURNING cur.id, cur.arr, cur.xmax = 0 AS created
        ), arr_changes AS (
            INSERT INTO accounts_arrchange (org_id, account_id, effective_date, arr)
            SELECT %(org_id)s, u.id, %(today)s::date, u.arr
            FROM upserted u LEFT JOIN previous p ON p.id = u.id
            WHERE p.id IS NULL OR p.arr IS DISTINCT FROM u.arr
            ON CONFLICT (org_id, account_id, effective_date) DO UPDATE SET arr = EXCLUDED.arr
        )
        SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM upserted
    """


def _keep_created_at(cursor, kind: str, org_id: int) -> None:
    # An empty created_at means "now" for a new row but "as stored" for a known one, or every
    # re-import would move it and the same file would never be a no-op.
    cursor.execute(
        f"""
        UPDATE {_STAGING_TABLE} s SET created_at = t.created_at
        FROM {_TABLES[kind]} t
        WHERE t.org_id = %s AND t.external_id = s.external_id AND s.created_at IS NULL
        """,
        [org_id],
    )


# --- the service --------------------------------------------------------------------------------


def import_lookups(*, org: Organization, kind: str) -> ImportLookups:
    """The organization's accounts and members, as the parsing layer needs them (inside the tenant)."""
    columns = {column.type for column in FORMATS[kind]}
    account_ids = {}
    member_ids = {}
    if "account" in columns:
        account_ids = dict(Account.objects.filter(org=org).values_list("external_id", "id"))
    if "member" in columns:
        for email, username, user_id in Membership.objects.filter(org=org).values_list(
            "user__email", "user__username", "user_id"
        ):
            for address in (username, email):
                if address:
                    member_ids[address.strip().lower()] = user_id
    return ImportLookups(tz=org.tz, account_ids=account_ids, member_ids=member_ids)


def _rows_in(file) -> int | None:
    """A quick line count for the progress bar (quoted line breaks make it an estimate)."""
    if isinstance(file, str | Path):
        with open(file, "rb") as handle:
            return max(sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1, 0)
    return None


def csv_import(*, org: Organization, kind: str, file, progress: Progress | None = None) -> ImportResult:
    """Import one CSV file of `kind` into the organization, all or nothing; raises CsvImportError."""
    if kind not in FORMATS:
        raise ValueError(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    report = progress or (lambda stage, done, total: None)
    total = _rows_in(file)
    with tenant(org):
        lookups = import_lookups(org=org, kind=kind)
        errors: list[pd.DataFrame] = []
        keys: list[pd.DataFrame] = []
        rows = 0
        report("validating", 0, total)
        with connection.cursor() as cursor:
            _create_staging(cursor, kind)
            # One COPY stream for the whole file: the server parses a chunk while pandas checks the next.
            binary = _binary_copy(kind)
            with cursor.copy(_copy_sql(kind)) as copy:
                if binary:
                    copy.write(_BINARY_HEADER)  # even if no row follows: the server reads it first
                for raw in read_chunks(file, kind):
                    parsed = validate_frame(kind, raw, lookups)
                    rows += len(raw)
                    if len(parsed.errors):
                        errors.append(parsed.errors)
                    staged = _staging_frame(kind, parsed.clean)
                    keys.append(_key_frame(kind, parsed.clean))
                    if not errors:
                        copy.write(_binary_bytes(kind, staged) if binary else _csv_bytes(staged))
                    report("validating", rows, total)
            if keys:
                errors.append(duplicate_errors(kind, pd.concat(keys, ignore_index=True)))
            found = pd.concat(errors, ignore_index=True) if errors else EMPTY_ERRORS
            if len(found):
                raise CsvImportError(listed_errors(found), count=len(found))
            report("saving", rows, total)
            # Temporary tables are never auto-analyzed; without statistics the planner guesses a
            # handful of rows and picks a nested loop for a million. Sorting and hashing a large
            # file's keys needs more than the default 4 MB of working memory.
            cursor.execute(f"ANALYZE {_STAGING_TABLE}")
            cursor.execute("SELECT current_setting('work_mem'), set_config('work_mem', '128MB', true)")
            work_mem = cursor.fetchone()[0]
            today = datetime.now(org.tz).date()
            if kind in ("accounts", "tasks"):
                _keep_created_at(cursor, kind, org.pk)
            cursor.execute(
                _accounts_upsert_sql() if kind == "accounts" else _upsert_sql(kind),
                {"org_id": org.pk, "today": today},
            )
            created, updated = cursor.fetchone()
            cursor.execute("SELECT set_config('work_mem', %s, true)", [work_mem])
            cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{_STAGING_TABLE}")
        report("done", rows, total)
    if kind == "accounts" and created + updated:
        from health.portfolio import portfolio_prime

        # Accounts changed (owners, stages, ARR): have the Portfolio's figures ready again once committed.
        transaction.on_commit(lambda: portfolio_prime(org=org))
    return ImportResult(kind=kind, rows=rows, created=created, updated=updated, unchanged=rows - created - updated)


__all__ = [
    "CsvImportError",
    "ImportLookups",
    "ImportResult",
    "KINDS",
    "RowError",
    "csv_import",
    "duplicate_errors",
    "import_lookups",
    "listed_errors",
    "read_chunks",
    "validate_frame",
]
