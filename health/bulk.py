"""Set-based SQL plumbing for the nightly compute: whole frames in and out in one statement.

Django's cursor binds parameters on the client, quoting every element of a 10,000-item array as
text; `server_cursor` binds them on the server instead, and `%b` placeholders send arrays in
binary. Reads go through COPY ... TO STDOUT into pandas' CSV parser. Both use Django's own
connection, so they run inside the caller's transaction and tenant.
"""

import io
from contextlib import contextmanager

import pandas as pd
import psycopg
from django.db import connection

READ_DTYPES = {"int": "int64", "str": "object", "float": "float64", "ts": "float64", "day": "float64", "bool": "bool"}


@contextmanager
def server_cursor():
    """A psycopg cursor with server-side binding on Django's connection (same transaction)."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def read_frame(sql: str, params: dict, columns: list[tuple[str, str]]) -> pd.DataFrame:
    """Run a SELECT through COPY (CSV) into a frame.

    `columns` names each selected column with its kind: int, str, float, bool, `ts` (selected as
    epoch microseconds, returned as UTC timestamps) or `day` (selected as days since 1970-01-01,
    returned as dates).
    """
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER)", params) as copy:
            data = b"".join(bytes(block) for block in copy)
    frame = pd.read_csv(
        io.BytesIO(data),
        dtype={name: READ_DTYPES[kind] for name, kind in columns},
        keep_default_na=False,
        na_values=[""],
        true_values=["t"],
        false_values=["f"],
    )
    for name, kind in columns:
        if kind == "str":
            # CSV cannot tell NULL from '' apart once parsed; text is never null in our frames.
            frame[name] = frame[name].fillna("")
        elif kind == "ts":
            frame[name] = pd.to_datetime(frame[name], unit="us", utc=True)
        elif kind == "day":
            days = frame[name]
            # Through int64 days: pandas' float path (unit="D") can overflow on columns with nulls.
            values = days.fillna(0).astype("int64").to_numpy().astype("datetime64[D]").astype("datetime64[ns]")
            frame[name] = pd.Series(values, index=frame.index).where(days.notna())
    return frame


def stage_frame(cursor, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
    """Load a frame into the session's temporary table `name` with one COPY.

    The table is created on first use and emptied at each load and at commit, so a statement that
    follows reads exactly this frame. Values go as CSV with NULL written `\\N`, so an empty string
    stays an empty string.
    """
    definition = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
    cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({definition}) ON COMMIT DELETE ROWS")
    cursor.execute(f"TRUNCATE {name}")
    data = frame[list(columns)].to_csv(index=False, header=False, na_rep="\\N")
    with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN (FORMAT csv, NULL '\\N')") as copy:
        copy.write(data)
