"""The embedded store: one SQLite file in WAL mode, shared by the processes of one host.

The controller calls `SQLiteStore.create` before any worker starts, because switching a
file to WAL while other processes open it fails with "database is locked"; workers
then open the existing file. Every write runs in one `BEGIN IMMEDIATE` transaction,
which takes the write lock up front, so two processes never both read a state and
then race to write it. The clock is `time.time()`, read once the lock is held, so
times are non-decreasing in commit order (on one host all processes share it).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from pytest_roadmap.errors import SettingError
from pytest_roadmap.store.base import (
    Spacing,
    Store,
    StoreError,
    TicketLost,
    window_fits,
    window_place,
)

SCHEMA_VERSION = 2

# How long a process waits for another one's write lock before giving up. Transactions
# last well under a millisecond, so this only trips when something is badly wrong.
BUSY_TIMEOUT = 30.0

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rate (key TEXT PRIMARY KEY, tat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gate_limit (key TEXT PRIMARY KEY, lim INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gate_ticket (
    ticket INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    holding INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gate_ticket_by_key ON gate_ticket (key, ticket);
CREATE TABLE IF NOT EXISTS window_entry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    amount INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS window_entry_by_key ON window_entry (key, at);
CREATE TABLE IF NOT EXISTS value (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL);
INSERT OR REPLACE INTO meta (name, value) VALUES ('version', '{SCHEMA_VERSION}');
"""

_WINDOWS_DRIVE = re.compile(r"^/[A-Za-z]:")
# An integer value, as the Redis store's Lua reads one (int() would also take "1_000" and
# non-ASCII digits, which that store refuses).
_INTEGER = re.compile(r"[ \t\n\v\f\r]*[-+]?[0-9]+[ \t\n\v\f\r]*")


class SQLiteStore(Store):
    """A store in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the store that `SQLiteStore.create` made at `path`."""
        self._path = Path(path).absolute()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._closed = False
        with self._lock:
            conn = self._connection()
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                row = conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path} is not a roadmap store: {exc}") from exc
            if mode != "wal" or row is None or row[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{self._path} is not a roadmap store (version {SCHEMA_VERSION})")

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> SQLiteStore:
        """Create (or reuse) the file at `path`, switch it to WAL, and open it."""
        target = Path(path).absolute()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot create a store at {target}: {exc}") from exc
        try:
            # WAL lets readers run beside the one writer, and the mode sticks to the file.
            conn.execute("PRAGMA journal_mode = WAL")
            # One script, so the schema and its version appear together or not at all.
            conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}COMMIT;\n")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create a store at {target}: {exc}") from exc
        finally:
            conn.close()
        return cls(target)

    @classmethod
    def from_url(cls, url: str, *, create: bool = False) -> SQLiteStore:
        """Open (or create) the store named by `sqlite:///absolute/path.db`."""
        parts = urlsplit(url)
        path = unquote(parts.path)
        if _WINDOWS_DRIVE.match(path):
            path = path[1:]
        if parts.netloc or not Path(path).is_absolute():
            raise SettingError(
                f"store URL {url!r} must name an absolute path, like sqlite:///tmp/roadmap.db"
            )
        return cls.create(path) if create else cls(path)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def url(self) -> str:
        posix = self._path.as_posix()
        if not posix.startswith("/"):
            posix = "/" + posix  # a Windows drive: sqlite:///C:/...
        return f"sqlite://{quote(posix)}"

    def clock(self) -> float:
        return time.time()

    # -- plumbing --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This process's connection; a forked child must not reuse its parent's."""
        if self._closed:
            raise StoreError(f"the store at {self._path} is closed")
        pid = os.getpid()
        if self._conn is None or self._pid != pid:
            uri = f"file:{quote(self._path.as_posix())}?mode=rw"
            try:
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=BUSY_TIMEOUT,
                    isolation_level=None,
                    check_same_thread=False,
                )
                # Durability across power loss is not worth an fsync per commit for a
                # store that lives as long as one run.
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store at {self._path}: {exc}") from exc
            self._conn, self._pid = conn, pid
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, float]]:
        """One write transaction and the store time at which it holds the lock."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: {exc}") from exc
            try:
                yield conn, time.time()
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(f"{self._path}: {exc}") from exc
            except BaseException:
                _rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(conn)
                raise StoreError(f"{self._path}: {exc}") from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[tuple[sqlite3.Connection, float]]:
        """A connection for one consistent SELECT, and the store time."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn, time.time()
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: {exc}") from exc

    # -- rate limiting ---------------------------------------------------------------

    def _reserve_all(self, limits: Sequence[Spacing]) -> float:
        with self._write() as (conn, now):
            tats: list[float] = []
            send = now
            for key, interval, burst, _ in limits:
                row = conn.execute("SELECT tat FROM rate WHERE key = ?", (key,)).fetchone()
                # GCRA: `tat` is when the bucket would be empty again; a send may go once
                # it is no more than (burst - 1) intervals ahead of now.
                tat = max(float(row[0]), now) if row else now
                send = max(send, tat - (burst - 1) * interval)
                tats.append(tat)
            for (key, interval, _, later), tat in zip(limits, tats, strict=True):
                for at, step in later:
                    if send >= at:
                        interval = step
                conn.execute(
                    "INSERT INTO rate (key, tat) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                    (key, max(tat, send) + interval),
                )
        return send

    # -- sliding windows -------------------------------------------------------------

    def _window_reserve(
        self, key: str, amount: int, window: float, limit: float
    ) -> tuple[int, float]:
        with self._write() as (conn, now):
            conn.execute("DELETE FROM window_entry WHERE key = ? AND at <= ?", (key, now - window))
            entries = conn.execute(
                "SELECT at, amount FROM window_entry WHERE key = ? ORDER BY at, id", (key,)
            ).fetchall()
            send = window_place(now, entries, amount, window, limit)
            row = conn.execute(
                "INSERT INTO window_entry (key, at, amount) VALUES (?, ?, ?) RETURNING id",
                (key, send, amount),
            ).fetchone()
        return int(row[0]), send

    def _window_settle(self, key: str, entry: int, amount: int) -> bool:
        with self._write() as (conn, _):
            cursor = conn.execute(
                "UPDATE window_entry SET amount = ? WHERE key = ? AND id = ?", (amount, key, entry)
            )
        return cursor.rowcount == 1

    def _window_move(self, key: str, entry: int, window: float, limit: float) -> bool:
        with self._write() as (conn, now):
            row = conn.execute(
                "SELECT at, amount FROM window_entry WHERE key = ? AND id = ?", (key, entry)
            ).fetchone()
            if row is None:
                return False
            at, amount = float(row[0]), int(row[1])
            if at >= now:
                return True
            others = conn.execute(
                "SELECT at, amount FROM window_entry WHERE key = ? AND id != ? AND at > ?"
                " ORDER BY at, id",
                (key, entry, now - window),
            ).fetchall()
            if not window_fits(others, now, amount, window, limit):
                return False
            conn.execute("UPDATE window_entry SET at = ? WHERE id = ?", (now, entry))
        return True

    # -- concurrency gate ------------------------------------------------------------

    def _gate_set_limit(self, key: str, limit: int) -> None:
        with self._write() as (conn, _):
            conn.execute(
                "INSERT INTO gate_limit (key, lim) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET lim = excluded.lim",
                (key, limit),
            )

    def _gate_limit(self, key: str) -> int:
        with self._read() as (conn, _):
            row = conn.execute("SELECT lim FROM gate_limit WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 1

    def _gate_enqueue(self, key: str, holder: str, lease: float) -> int:
        with self._write() as (conn, now):
            row = conn.execute(
                "INSERT INTO gate_ticket (key, holder, holding, expires) VALUES (?, ?, 0, ?)"
                " RETURNING ticket",
                (key, holder, now + lease),
            ).fetchone()
        return int(row[0])

    def _gate_try_acquire(self, key: str, ticket: int, lease: float) -> bool:
        with self._write() as (conn, now):
            conn.execute("DELETE FROM gate_ticket WHERE key = ? AND expires <= ?", (key, now))
            row = conn.execute(
                "SELECT holding FROM gate_ticket WHERE key = ? AND ticket = ?", (key, ticket)
            ).fetchone()
            if row is None:
                raise TicketLost(f"ticket {ticket} of gate {key!r} is gone")
            holding = bool(row[0])
            if not holding:
                held, first = conn.execute(
                    "SELECT COALESCE(SUM(holding), 0), MIN(CASE WHEN holding = 0 THEN ticket END)"
                    " FROM gate_ticket WHERE key = ?",
                    (key,),
                ).fetchone()
                limit_row = conn.execute(
                    "SELECT lim FROM gate_limit WHERE key = ?", (key,)
                ).fetchone()
                limit = int(limit_row[0]) if limit_row else 1
                holding = held < limit and first == ticket
            conn.execute(
                "UPDATE gate_ticket SET holding = ?, expires = ? WHERE ticket = ?",
                (int(holding), now + lease, ticket),
            )
        return holding

    def _gate_renew(self, key: str, ticket: int, lease: float) -> bool:
        with self._write() as (conn, now):
            cursor = conn.execute(
                "UPDATE gate_ticket SET expires = ? WHERE key = ? AND ticket = ? AND expires > ?",
                (now + lease, key, ticket, now),
            )
        return cursor.rowcount == 1

    def _gate_release(self, key: str, ticket: int) -> None:
        with self._write() as (conn, _):
            conn.execute("DELETE FROM gate_ticket WHERE key = ? AND ticket = ?", (key, ticket))

    def _gate_reclaim(self, key: str, holder: str) -> int:
        with self._write() as (conn, now):
            conn.execute("DELETE FROM gate_ticket WHERE key = ? AND expires <= ?", (key, now))
            cursor = conn.execute(
                "DELETE FROM gate_ticket WHERE key = ? AND holder = ?", (key, holder)
            )
        return cursor.rowcount

    def _gate_state(self, key: str) -> tuple[int, int]:
        with self._read() as (conn, now):
            held, total = conn.execute(
                "SELECT COALESCE(SUM(holding), 0), COUNT(*) FROM gate_ticket"
                " WHERE key = ? AND expires > ?",
                (key, now),
            ).fetchone()
        return int(held), int(total) - int(held)

    # -- small shared values ---------------------------------------------------------

    def _put(self, key: str, value: str, ttl: float | None) -> None:
        with self._write() as (conn, now):
            conn.execute("DELETE FROM value WHERE expires <= ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO value (key, value, expires) VALUES (?, ?, ?)",
                (key, value, None if ttl is None else now + ttl),
            )

    def _get(self, key: str) -> str | None:
        with self._read() as (conn, now):
            row = conn.execute(
                "SELECT value FROM value WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            ).fetchone()
        return None if row is None else str(row[0])

    def _incr(self, key: str, amount: int) -> int:
        with self._write() as (conn, now):
            row = conn.execute(
                "SELECT value, expires FROM value"
                " WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            ).fetchone()
            current, expires = ("0", None) if row is None else (str(row[0]), row[1])
            if not _INTEGER.fullmatch(current):
                raise ValueError(f"value of {key!r} is not an integer: {current!r}")
            result = int(current) + amount
            conn.execute(
                "INSERT OR REPLACE INTO value (key, value, expires) VALUES (?, ?, ?)",
                (key, str(result), expires),
            )
        return result

    def _swap(self, key: str, expected: str | None, value: str) -> bool:
        with self._write() as (conn, now):
            row = conn.execute(
                "SELECT value FROM value WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, now),
            ).fetchone()
            swapped = (None if row is None else str(row[0])) == expected
            if swapped:
                conn.execute(
                    "INSERT OR REPLACE INTO value (key, value, expires) VALUES (?, ?, NULL)",
                    (key, value),
                )
        return swapped

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"


def _rollback(conn: sqlite3.Connection) -> None:
    # The original error matters more than a failed rollback, and SQLite rolls an
    # unfinished transaction back on its own when the connection goes.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")
