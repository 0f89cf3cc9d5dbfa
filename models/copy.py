"""Writing many rows with Postgres COPY: one stream instead of one statement per row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Table
from sqlalchemy.orm import Session
from sqlalchemy.sql import FromClause


def copy_rows(session: Session, table: FromClause, rows: Sequence[Mapping[str, Any]]) -> None:
    """COPY `rows` (each with the same keys, as for an insert) into `table` on the
    session's connection, so inside its transaction. JSON columns (JSONB included) take
    their values as documents, as an insert would."""
    if not rows:
        return
    assert isinstance(table, Table)
    columns = list(rows[0])
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)}
    driver = session.connection().connection.driver_connection
    assert driver is not None
    names = ", ".join(f'"{c}"' for c in columns)
    with driver.cursor() as cursor, cursor.copy(
            f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([Jsonb(row[c]) if c in json_columns and row[c] is not None
                            else row[c] for c in columns])
