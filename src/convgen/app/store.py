"""Where a study's raters and answers live: SQLite (a file in the study's folder) or PostgreSQL (a database URL).

Two tables, the same in both databases: ``sessions`` (one row per rater: opaque token, the seed that ordered
their trials, the trials as JSON) and ``answers`` (one row per answered trial, primary key ``(token, trial)``, so
a second answer to one trial is refused by the database itself, whatever the number of server threads).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from convgen.errors import ConvgenError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sessions (
        study TEXT NOT NULL, token TEXT PRIMARY KEY, seed BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL,
        trials TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS answers (
        study TEXT NOT NULL, token TEXT NOT NULL, trial TEXT NOT NULL, position INTEGER NOT NULL,
        choice TEXT NOT NULL, ms DOUBLE PRECISION NOT NULL, answered DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (token, trial))""",
    "CREATE INDEX IF NOT EXISTS answers_study ON answers (study)",
    "CREATE INDEX IF NOT EXISTS sessions_study ON sessions (study)",
)


class DuplicateAnswer(ConvgenError):
    """The trial was answered already."""


class Store:
    """A study's database. ``url`` is ``sqlite:///PATH`` (or a bare path) or ``postgresql://...``."""

    def __init__(self, url: str, study: str) -> None:
        self.url, self.study = url, study
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self._local = threading.local()
        self._lock = threading.Lock()  # SQLite: one writer at a time in this process
        if not self.postgres:
            path = Path(url.removeprefix("sqlite:///"))
            if not path.parent.is_dir():
                raise ConvgenError(f"{path.parent}: the study folder does not exist")
            self.path = path
        with self._cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)

    # -- connections -------------------------------------------------------------------------------------------
    def _connect(self):
        if self.postgres:
            try:
                import psycopg
            except ImportError:
                raise ConvgenError("a PostgreSQL study needs psycopg: pip install 'convgen[postgres]'") from None
            try:
                return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else "cannot connect"
                raise ConvgenError(f"PostgreSQL database of study {self.study!r}: {first}") from None
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    def _connection(self):
        con = getattr(self._local, "con", None)
        if con is None or (self.postgres and con.closed):
            con = self._local.con = self._connect()
        return con

    class _Cursor:
        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self):
            s = self.store
            if not s.postgres:
                s._lock.acquire()
            self.cur = s._connection().cursor()
            return self

        def execute(self, sql: str, params: tuple = ()) -> None:
            self.cur.execute(sql.replace("?", "%s") if self.store.postgres else sql, params)

        def fetchall(self) -> list[tuple]:
            return list(self.cur.fetchall())

        def __exit__(self, *exc) -> None:
            self.cur.close()
            if not self.store.postgres:
                self.store._lock.release()

    def _cursor(self) -> Store._Cursor:
        return Store._Cursor(self)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- sessions and answers ----------------------------------------------------------------------------------
    def add_session(self, token: str, seed: int, trials: list[dict[str, Any]]) -> None:
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO sessions (study, token, seed, created, trials) VALUES (?, ?, ?, ?, ?)",
                (self.study, token, seed, time.time(), json.dumps(trials)),
            )

    def session(self, token: str) -> dict[str, Any] | None:
        with self._cursor() as cur:
            cur.execute("SELECT seed, created, trials FROM sessions WHERE study = ? AND token = ?", (self.study, token))
            rows = cur.fetchall()
        if not rows:
            return None
        seed, created, trials = rows[0]
        return {"token": token, "seed": int(seed), "created": float(created), "trials": json.loads(trials)}

    def count_sessions(self) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM sessions WHERE study = ?", (self.study,))
            return int(cur.fetchall()[0][0])

    def sessions(self) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute("SELECT token, seed, created, trials FROM sessions WHERE study = ? ORDER BY created",
                        (self.study,))  # fmt: skip
            rows = cur.fetchall()
        return [{"token": t, "seed": int(s), "created": float(c), "trials": json.loads(tr)} for t, s, c, tr in rows]

    def add_answer(self, token: str, trial: str, position: int, choice: str, ms: float) -> None:
        """Store one answer; :class:`DuplicateAnswer` when this trial of this token was answered already."""
        try:
            with self._cursor() as cur:
                cur.execute(
                    "INSERT INTO answers (study, token, trial, position, choice, ms, answered) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (self.study, token, trial, position, choice, float(ms), time.time()),
                )
        except Exception as e:
            if _is_unique_violation(e):
                raise DuplicateAnswer(f"trial {trial} was answered already") from None
            raise

    def answers(self, token: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT token, trial, position, choice, ms, answered FROM answers WHERE study = ?"
        params: tuple = (self.study,)
        if token is not None:
            sql, params = sql + " AND token = ?", (self.study, token)
        with self._cursor() as cur:
            cur.execute(sql + " ORDER BY answered, token, position", params)
            rows = cur.fetchall()
        keys = ("token", "trial", "position", "choice", "ms", "answered")
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _is_unique_violation(e: Exception) -> bool:
    if isinstance(e, sqlite3.IntegrityError):
        return True
    return type(e).__name__ == "UniqueViolation" or getattr(e, "sqlstate", None) == "23505"
