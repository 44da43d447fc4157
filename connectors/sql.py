"""SQL targets: SQLite (the embedded default) and PostgreSQL, one INSERT template per action.

Each batch is one transaction: a multi-row INSERT when the statement's shape
allows it (else the rows one by one in that transaction). A target that is
down, locked or restarting is retried; a statement the database refuses
(no such table, a constraint, a bad value) fails those messages.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from connectors.resource import BufferedAction, Connector, SendError
from connectors.sql_template import SqlTemplate
from engine.config.schema import (
    PgsqlConnectorSettings,
    SqlActionSettings,
    SqliteConnectorSettings,
)

# SQLite allows 32766 bound variables per statement (3.32+); stay well below
SQLITE_MAX_PARAMS = 30_000
PGSQL_DEFAULT_PORT = 5432


def parse_server(server: str, default_port: int) -> tuple[str, int]:
    """EMQX's `server`: "host", "host:port", "[v6 address]" or "[v6 address]:port" → (host, port);
    ValueError says what is wrong."""
    text = server.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError('expected "[address]:port" for an IPv6 address')
        port_text = rest[1:]
    elif text.count(":") > 1:
        raise ValueError('write an IPv6 address in brackets: "[::1]:5432"')
    else:
        host, _, port_text = text.partition(":")
        if ":" not in text:
            port_text = ""
    if not host:
        raise ValueError('expected "host" or "host:port", e.g. "127.0.0.1:5432"')
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("the port is not a number in 1..65535")
    return host, int(port_text)


class SqlConnector(Connector):
    style = "qmark"
    transactions = 0  # committed batches, for the operator and the tests

    async def insert(self, template: SqlTemplate, rows: list[list[Any]]) -> None:
        raise NotImplementedError


class SqliteConnector(SqlConnector):
    type = "sqlite"
    style = "qmark"

    def __init__(self, name: str, settings: SqliteConnectorSettings, data_dir: str | Path) -> None:
        super().__init__(name, settings.resource_opts.health_check_interval)
        self.settings = settings
        path = Path(settings.path)
        self.path = path if path.is_absolute() else Path(data_dir) / path
        self.db: aiosqlite.Connection | None = None

    async def connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = await aiosqlite.connect(self.path, timeout=self.settings.busy_timeout)
        await self.db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer

    async def check(self) -> None:
        assert self.db is not None
        await self.db.execute("SELECT 1")

    async def disconnect(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            await db.close()

    async def insert(self, template: SqlTemplate, rows: list[list[Any]]) -> None:
        db = self.db
        if db is None:
            raise SendError("not connected", retriable=True, connection=True)
        per_statement = max(1, SQLITE_MAX_PARAMS // max(1, len(template.params))) if template.multi_row else 1
        try:
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                if template.multi_row:
                    await db.execute(template.statement(len(chunk)), [v for row in chunk for v in row])
                else:
                    await db.executemany(template.statement(1), chunk)
            await db.commit()
            self.transactions += 1
        except sqlite3.OperationalError as exc:
            await _rollback(db)
            locked = "locked" in str(exc) or "busy" in str(exc)
            raise SendError(f"sqlite: {exc}", retriable=locked) from None
        except sqlite3.Error as exc:
            await _rollback(db)
            raise SendError(f"sqlite: {exc}", retriable=False) from None


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.rollback()
    except sqlite3.Error:
        pass


class PgsqlConnector(SqlConnector):
    type = "pgsql"
    style = "format"

    def __init__(self, name: str, settings: PgsqlConnectorSettings) -> None:
        super().__init__(name, settings.resource_opts.health_check_interval)
        self.settings = settings
        self.pool: Any = None

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        s = self.settings
        host, port = parse_server(s.server, PGSQL_DEFAULT_PORT)
        extra: dict[str, Any] = {}
        if s.ssl.enable:
            extra["sslmode"] = "verify-full" if s.ssl.verify == "verify_peer" else "require"
            if s.ssl.cacertfile:
                extra["sslrootcert"] = s.ssl.cacertfile
            if s.ssl.certfile:
                extra["sslcert"], extra["sslkey"] = s.ssl.certfile, s.ssl.keyfile
        return make_conninfo(host=host, port=str(port), dbname=s.database, user=s.username,
                             password=s.password or None, connect_timeout=max(1, int(s.connect_timeout)),
                             application_name="ocpp-gateway", **extra)

    async def connect(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        s = self.settings
        # disable_prepared_statements: psycopg prepares a statement run often (prepare_threshold);
        # None never does, for PgBouncer in transaction mode (EMQX's meaning)
        kwargs = {"prepare_threshold": None} if s.disable_prepared_statements else None
        pool = AsyncConnectionPool(self.conninfo(), min_size=1, max_size=s.pool_size, open=False,
                                   timeout=s.connect_timeout, reconnect_timeout=0, kwargs=kwargs)
        try:
            await pool.open(wait=True, timeout=s.connect_timeout)
        except Exception:
            await pool.close()
            raise
        self.pool = pool

    async def check(self) -> None:
        async with self.pool.connection(timeout=self.settings.connect_timeout) as conn:
            await conn.execute("SELECT 1")

    async def disconnect(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            await pool.close()

    async def insert(self, template: SqlTemplate, rows: list[list[Any]]) -> None:
        import psycopg
        from psycopg_pool import PoolTimeout

        if self.pool is None:
            raise SendError("not connected", retriable=True, connection=True)
        try:
            async with self.pool.connection(timeout=self.settings.connect_timeout) as conn:
                async with conn.transaction():
                    if template.multi_row:
                        await conn.execute(template.statement(len(rows)), [v for row in rows for v in row])
                    else:
                        async with conn.cursor() as cur:
                            await cur.executemany(template.statement(1), rows)
            self.transactions += 1
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise SendError(f"pgsql: {_first_line(exc)}", retriable=True, connection=True) from None
        except psycopg.Error as exc:
            raise SendError(f"pgsql: {_first_line(exc)}", retriable=False) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sql_action(kind: str, name: str, settings: SqlActionSettings, connector: SqlConnector) -> BufferedAction:
    template = SqlTemplate(settings.parameters.sql, connector.style)  # type: ignore[arg-type]

    async def send(rows: list[list[Any]]) -> None:
        await connector.insert(template, rows)

    return BufferedAction(kind, name, connector, settings.resource_opts, template.values, send, settings)
