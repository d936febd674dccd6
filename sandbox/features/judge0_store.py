"""Where Judge0 submissions and their queue live: SQLite (one node), Redis or PostgreSQL.

Each keeps a submission as its record (see :mod:`sandbox.features.judge0`) in JSON
and a FIFO queue of the tokens waiting to run. The clients are synchronous
(stdlib ``sqlite3``, redis-py's ``Redis``, psycopg 3), called in worker
threads through ``trio.to_thread``, one call at a time per store.

- ``sqlite:///PATH``: a file in the server's state folder by default. It
  survives a restart: submissions that were running when the server stopped
  are queued again when it starts.
- ``redis://HOST:PORT/DB``: several ``stack serve`` nodes share the queue;
  any node answers for any token. A record expires ``keep`` seconds after it
  was last written. A node that dies while running a submission loses that
  run (its record stays Processing until it expires).
- ``postgresql://USER:PASSWORD@HOST:PORT/DB``: the same for nodes that share
  a PostgreSQL database (a table ``judge0_submissions``; claims use
  ``FOR UPDATE SKIP LOCKED``). Needs ``pip install 'psycopg[binary]'``.

Three stores behind one Protocol in one module (about 630 lines), as their
queue semantics must agree line by line.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions
import trio

from ..errors import ConfigError, Overloaded
from .judge0 import IN_QUEUE, PROCESSING, Settings, state_dir

T = TypeVar("T")
Record = dict[str, Any]
#: Who runs a submission, kept in its record while it runs (``node``).
NODE = f"{socket.gethostname()}:{os.getpid()}"


def _gone(node: Any) -> bool:
    """Whether the server that took a submission has stopped (known on this host only)."""
    host, _, pid = str(node or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) == os.getpid()  # this very process is starting: nothing of it runs yet


class Store(Protocol):
    """Submissions by token, and the queue of those waiting."""

    #: Seconds between looks at the queue when nothing woke this node.
    poll: float

    async def add(self, records: Sequence[Record], *, queue: bool = True) -> None:
        """Keep new records; queue their tokens (in order) unless ``queue`` is false."""

    async def save(self, record: Record) -> None:
        """Write a record again (its status or result changed)."""

    async def requeue(self, record: Record) -> None:
        """Put a submission whose run was cut short back at the head of the queue."""

    async def get(self, tokens: Sequence[str]) -> list[Record | None]:
        """The records of ``tokens``, None for unknown ones."""

    async def delete(self, token: str) -> Record | None:
        """Forget a record; the record, or None when unknown."""

    async def page(self, number: int, size: int) -> tuple[list[Record], int]:
        """The ``number``-th page (from 1) of ``size`` records, newest first, and the total."""

    async def claim(self) -> Record | None:
        """Take the oldest queued submission, now Processing; None when the queue is empty."""

    async def queue_size(self) -> int:
        """Submissions waiting."""

    def check(self) -> tuple[bool, str]:
        """For /healthz (blocking, from a worker thread): whether the store answers."""

    async def prune(self, before: float) -> int:
        """Forget finished submissions created before the epoch time ``before``."""


class _Threaded:
    """Runs a store's blocking calls in a thread, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await trio.to_thread.run_sync(locked)


class SqliteStore(_Threaded):
    """Submissions in one SQLite file (WAL mode)."""

    poll = 1.0

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=10)  # fmt: skip
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS submissions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "token TEXT UNIQUE NOT NULL, status_id INTEGER NOT NULL, "
                "queued INTEGER NOT NULL, created REAL NOT NULL, data TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS submissions_queue ON submissions (queued, seq)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"judge0 store {path}: {exc}") from exc

    def recover(self) -> int:
        """Queue again what was running when its server stopped (blocking).

        Submissions that another live server on this host is running (two
        servers on one file) are left to it.
        """
        rows = self._db.execute(
            "SELECT token, data FROM submissions WHERE status_id = ?", (PROCESSING,)
        ).fetchall()
        count = 0
        for token, data in rows:
            record = json.loads(data)
            if not _gone(record.get("node")):
                continue
            count += 1
            record["status_id"] = IN_QUEUE
            self._db.execute(
                "UPDATE submissions SET status_id = ?, queued = 1, data = ? WHERE token = ?",
                (IN_QUEUE, json.dumps(record), token),
            )
        return count

    def close(self) -> None:
        self._db.close()

    async def add(self, records: Sequence[Record], *, queue: bool = True) -> None:
        def add() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO submissions (token, status_id, queued, created, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(r["token"], r["status_id"], int(queue), time.time(), json.dumps(r))
                     for r in records],
                )  # fmt: skip

        await self._call(add)

    async def save(self, record: Record) -> None:
        await self._call(
            self._db.execute,
            "UPDATE submissions SET status_id = ?, data = ? WHERE token = ?",
            (record["status_id"], json.dumps(record), record["token"]),
        )

    async def requeue(self, record: Record) -> None:
        # Its sequence number stays: it is the oldest queued again.
        await self._call(
            self._db.execute,
            "UPDATE submissions SET status_id = ?, queued = 1, data = ? WHERE token = ?",
            (IN_QUEUE, json.dumps(record), record["token"]),
        )

    async def get(self, tokens: Sequence[str]) -> list[Record | None]:
        def get() -> list[Record | None]:
            found: dict[str, Record] = {}
            for start in range(0, len(tokens), 500):
                chunk = list(tokens[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for token, data in self._db.execute(
                    f"SELECT token, data FROM submissions WHERE token IN ({marks})", chunk
                ):
                    found[token] = json.loads(data)
            return [found.get(t) for t in tokens]

        return await self._call(get)

    async def page(self, number: int, size: int) -> tuple[list[Record], int]:
        def page() -> tuple[list[Record], int]:
            total = self._db.execute("SELECT count(*) FROM submissions").fetchone()[0]
            rows = self._db.execute(
                "SELECT data FROM submissions ORDER BY seq DESC LIMIT ? OFFSET ?",
                (size, (number - 1) * size),
            ).fetchall()
            return [json.loads(r[0]) for r in rows], int(total)

        return await self._call(page)

    async def delete(self, token: str) -> Record | None:
        def delete() -> Record | None:
            row = self._db.execute(
                "DELETE FROM submissions WHERE token = ? RETURNING data", (token,)
            ).fetchone()
            return json.loads(row[0]) if row else None

        return await self._call(delete)

    async def claim(self) -> Record | None:
        def claim() -> Record | None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT token, data FROM submissions WHERE queued = 1 ORDER BY seq LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                record: Record = json.loads(row[1])
                record.update(status_id=PROCESSING, node=NODE)
                self._db.execute(
                    "UPDATE submissions SET queued = 0, status_id = ?, data = ? WHERE token = ?",
                    (PROCESSING, json.dumps(record), row[0]),
                )
                return record

        return await self._call(claim)

    async def queue_size(self) -> int:
        def size() -> int:
            row = self._db.execute("SELECT count(*) FROM submissions WHERE queued = 1").fetchone()
            return int(row[0])

        return await self._call(size)

    def check(self) -> tuple[bool, str]:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM submissions WHERE queued = 1").fetchone()
        return True, f"sqlite {self.path}: {row[0]} queued"

    async def prune(self, before: float) -> int:
        def prune() -> int:
            cursor = self._db.execute(
                "DELETE FROM submissions WHERE created < ? AND status_id NOT IN (?, ?)",
                (before, IN_QUEUE, PROCESSING),
            )
            return cursor.rowcount

        return await self._call(prune)


class RedisStore(_Threaded):
    """Submissions in Redis: a JSON string per token and a list as the queue."""

    poll = 0.2

    def __init__(self, url: str, prefix: str, keep: float) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.keep = max(1, round(keep))
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._queue = f"{prefix}queue"
        self._index = f"{prefix}index"  # tokens by creation time, for the list

    def _key(self, token: str) -> str:
        return f"{self.prefix}submission:{token}"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await super()._call(fn, *args)
        except redis.exceptions.RedisError as exc:
            where = urlsplit(self.url)._replace(netloc=urlsplit(self.url).hostname or "").geturl()
            raise Overloaded(f"the submission store ({where}) is unavailable: {exc}",
                             retry_after=5) from exc  # fmt: skip

    def ping(self) -> None:
        """Check the server answers (blocking)."""
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()

    async def add(self, records: Sequence[Record], *, queue: bool = True) -> None:
        def add() -> None:
            pipe = self._redis.pipeline()
            # Scores: microseconds, plus the place in the batch (exact in a double).
            now = int(time.time() * 1000) * 1000
            for place, record in enumerate(records):
                pipe.set(self._key(record["token"]), json.dumps(record), ex=self.keep)
                pipe.zadd(self._index, {record["token"]: now + place})
            if queue and records:
                pipe.lpush(self._queue, *[r["token"] for r in records])
            pipe.execute()

        await self._call(add)

    async def save(self, record: Record) -> None:
        await self._call(self._redis.set, self._key(record["token"]), json.dumps(record),
                         None, self.keep)  # fmt: skip

    async def requeue(self, record: Record) -> None:
        def requeue() -> None:
            pipe = self._redis.pipeline()
            pipe.set(self._key(record["token"]), json.dumps(record), ex=self.keep)
            pipe.rpush(self._queue, record["token"])  # claims pop from the right: the head
            pipe.execute()

        await self._call(requeue)

    async def get(self, tokens: Sequence[str]) -> list[Record | None]:
        if not tokens:
            return []
        values = await self._call(self._redis.mget, [self._key(t) for t in tokens])
        return [json.loads(v) if v is not None else None for v in values]

    async def delete(self, token: str) -> Record | None:
        def delete() -> Record | None:
            pipe = self._redis.pipeline()
            pipe.get(self._key(token))
            pipe.delete(self._key(token))
            pipe.lrem(self._queue, 0, token)
            pipe.zrem(self._index, token)
            value = pipe.execute()[0]
            return json.loads(value) if value is not None else None

        return await self._call(delete)

    async def page(self, number: int, size: int) -> tuple[list[Record], int]:
        def page() -> tuple[list[Record], int]:
            # Records expire by themselves; their index entries go here.
            self._redis.zremrangebyscore(self._index, "-inf", (time.time() - self.keep) * 1e6)
            total = int(self._redis.zcard(self._index))
            start = (number - 1) * size
            tokens: Any = self._redis.zrevrange(self._index, start, start + size - 1)
            if not tokens:
                return [], total
            values: Any = self._redis.mget([self._key(t.decode()) for t in tokens])
            return [json.loads(v) for v in values if v is not None], total

        return await self._call(page)

    async def claim(self) -> Record | None:
        def claim() -> Record | None:
            while True:
                token: Any = self._redis.rpop(self._queue)
                if token is None:
                    return None
                value = self._redis.get(self._key(token.decode()))
                if value is None:
                    continue  # deleted or expired while it waited
                record: Record = json.loads(value)
                record.update(status_id=PROCESSING, node=NODE)
                self._redis.set(self._key(record["token"]), json.dumps(record), ex=self.keep)
                return record

        return await self._call(claim)

    async def queue_size(self) -> int:
        return int(await self._call(self._redis.llen, self._queue))

    def check(self) -> tuple[bool, str]:
        host = urlsplit(self.url).hostname
        try:
            with self._lock:
                size = self._redis.llen(self._queue)
        except redis.exceptions.RedisError as exc:
            return False, f"redis {host}: {exc}"
        return True, f"redis {host}: {size} queued"

    async def prune(self, before: float) -> int:
        return 0  # records expire by themselves


class PostgresStore(_Threaded):
    """Submissions in a PostgreSQL table, shared by every node that uses it."""

    poll = 0.2

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._db: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        return self._db

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        import psycopg

        def reconnecting() -> T:
            try:
                return fn(*args)
            except psycopg.OperationalError:
                if self._db is not None:
                    self._db.close()
                self._db = None  # a dropped connection: the next call opens a new one
                raise

        try:
            return await super()._call(reconnecting)
        except psycopg.Error as exc:
            host = urlsplit(self.url).hostname
            raise Overloaded(f"the submission store (postgresql://{host}) is unavailable: "
                             f"{str(exc).strip()}", retry_after=5) from exc  # fmt: skip

    def open(self) -> None:
        """Connect and make the table (blocking)."""
        db = self._connect()
        db.execute(
            "CREATE TABLE IF NOT EXISTS judge0_submissions (seq BIGSERIAL, "
            "token TEXT PRIMARY KEY, status_id INTEGER NOT NULL, queued BOOLEAN NOT NULL, "
            "created DOUBLE PRECISION NOT NULL, data TEXT NOT NULL)"
        )
        db.execute(
            "CREATE INDEX IF NOT EXISTS judge0_submissions_queue "
            "ON judge0_submissions (seq) WHERE queued"
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    async def add(self, records: Sequence[Record], *, queue: bool = True) -> None:
        def add() -> None:
            db = self._connect()
            with db.transaction(), db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO judge0_submissions (token, status_id, queued, created, data) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(r["token"], r["status_id"], queue, time.time(), json.dumps(r))
                     for r in records],
                )  # fmt: skip

        await self._call(add)

    async def save(self, record: Record) -> None:
        def save() -> None:
            self._connect().execute(
                "UPDATE judge0_submissions SET status_id = %s, data = %s WHERE token = %s",
                (record["status_id"], json.dumps(record), record["token"]),
            )

        await self._call(save)

    async def requeue(self, record: Record) -> None:
        def requeue() -> None:
            self._connect().execute(
                "UPDATE judge0_submissions SET status_id = %s, queued = true, data = %s "
                "WHERE token = %s",
                (IN_QUEUE, json.dumps(record), record["token"]),
            )

        await self._call(requeue)

    async def get(self, tokens: Sequence[str]) -> list[Record | None]:
        def get() -> list[Record | None]:
            rows = (
                self._connect()
                .execute(
                    "SELECT token, data FROM judge0_submissions WHERE token = ANY(%s)",
                    (list(tokens),),
                )
                .fetchall()
            )
            found = {token: json.loads(data) for token, data in rows}
            return [found.get(t) for t in tokens]

        return await self._call(get)

    async def page(self, number: int, size: int) -> tuple[list[Record], int]:
        def page() -> tuple[list[Record], int]:
            db = self._connect()
            total = db.execute("SELECT count(*) FROM judge0_submissions").fetchone()[0]
            rows = db.execute(
                "SELECT data FROM judge0_submissions ORDER BY seq DESC LIMIT %s OFFSET %s",
                (size, (number - 1) * size),
            ).fetchall()
            return [json.loads(r[0]) for r in rows], int(total)

        return await self._call(page)

    async def delete(self, token: str) -> Record | None:
        def delete() -> Record | None:
            row = (
                self._connect()
                .execute("DELETE FROM judge0_submissions WHERE token = %s RETURNING data", (token,))
                .fetchone()
            )
            return json.loads(row[0]) if row else None

        return await self._call(delete)

    async def claim(self) -> Record | None:
        def claim() -> Record | None:
            db = self._connect()
            with db.transaction():
                row = db.execute(
                    "SELECT token, data FROM judge0_submissions WHERE queued ORDER BY seq "
                    "LIMIT 1 FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return None
                record: Record = json.loads(row[1])
                record.update(status_id=PROCESSING, node=NODE)
                db.execute(
                    "UPDATE judge0_submissions SET queued = false, status_id = %s, data = %s "
                    "WHERE token = %s",
                    (PROCESSING, json.dumps(record), row[0]),
                )
                return record

        return await self._call(claim)

    async def queue_size(self) -> int:
        def size() -> int:
            row = (
                self._connect()
                .execute("SELECT count(*) FROM judge0_submissions WHERE queued")
                .fetchone()
            )
            return int(row[0])

        return await self._call(size)

    def check(self) -> tuple[bool, str]:
        import psycopg

        host = urlsplit(self.url).hostname
        try:
            with self._lock:
                row = (
                    self._connect()
                    .execute("SELECT count(*) FROM judge0_submissions WHERE queued")
                    .fetchone()
                )
        except psycopg.Error as exc:
            if self._db is not None:
                self._db.close()
            self._db = None
            return False, f"postgresql {host}: {str(exc).strip()}"
        return True, f"postgresql {host}: {row[0]} queued"

    async def prune(self, before: float) -> int:
        def prune() -> int:
            cursor = self._connect().execute(
                "DELETE FROM judge0_submissions WHERE created < %s AND status_id NOT IN (%s, %s)",
                (before, IN_QUEUE, PROCESSING),
            )
            return int(cursor.rowcount)

        return await self._call(prune)


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """Open the store ``settings.store`` names (default: SQLite in the state folder).

    Raises:
        ConfigError: the store cannot be opened or reached, saying why.
    """
    url = settings.store or f"sqlite:///{state_dir() / 'judge0.sqlite3'}"
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///abs, sqlite:////abs (SQLAlchemy's spelling) and sqlite:rel all work.
        raw = unquote(parts.netloc + parts.path)
        path = Path("/" + raw.lstrip("/") if raw.startswith("//") else raw)
        sqlite = await trio.to_thread.run_sync(SqliteStore, path)
        try:
            await trio.to_thread.run_sync(sqlite.recover)
            yield sqlite
        finally:
            sqlite.close()
        return
    if parts.scheme in ("redis", "rediss"):
        shared = RedisStore(url, settings.prefix, settings.keep)
        try:
            await trio.to_thread.run_sync(shared.ping)
        except redis.exceptions.RedisError as exc:
            shared.close()
            raise ConfigError(f"judge0 store {parts.hostname}:{parts.port}: {exc}") from exc
        try:
            yield shared
        finally:
            shared.close()
        return
    if parts.scheme in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(f"judge0 store {parts.scheme}://{parts.hostname}: install "
                              "psycopg (pip install 'psycopg[binary]')") from None  # fmt: skip
        database = PostgresStore(url)
        try:
            try:
                await trio.to_thread.run_sync(database.open)
            except psycopg.Error as exc:
                raise ConfigError(f"judge0 store postgresql://{parts.hostname}:{parts.port}: "
                                  f"{str(exc).strip()}") from exc  # fmt: skip
            yield database
        finally:
            database.close()
        return
    raise ConfigError(
        f"judge0 store {url!r}: use sqlite:///PATH, redis://HOST:PORT/DB or postgresql://..."
    )


__all__ = ["NODE", "PostgresStore", "RedisStore", "SqliteStore", "Store", "open_store"]
