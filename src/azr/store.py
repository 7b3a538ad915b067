"""The durable task buffers and rollout log of one run: a SQLite database (``RUN_DIR/tasks.sqlite``, WAL mode).

Tables:

- ``tasks``: one row per task: type, program, inputs and outputs (JSON lists of strings), message, a content hash,
  the step it was added, its origin (seed, proposal, imported) and the solve statistics seen so far. A task is a
  duplicate when its type and the hash of its normalised program (``ast.unparse``) and normalised inputs match a
  stored row; duplicates are skipped, never stored twice.
- ``evicted_at`` (in ``tasks``): NULL for a live task, else the step at which the buffer cap evicted it.
- ``rollouts``: one row per generated reply: step, role, type, prompt, reply, parse status, reward, advantage,
  timings (JSON), ``outcome`` (proposals: ``valid``, ``duplicate`` (valid but already stored) or the validation
  reject reason; solves: ``correct`` or ``wrong``; ``format_error``, ``parser_error``; NULL in older rows) and
  ``flags`` (JSON list of the safety monitor's flags, :mod:`azr.safety`).

Every write runs in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a crash, even SIGKILL in the middle of
a batch, leaves either the whole batch or none of it. Sampling takes a ``random.Random`` and is deterministic given
its state: candidate ids are read in id order and drawn with the rng.

Buffer cap (``TaskStore(path, cap=N)``, the run's ``selfplay.buffer_cap``): after every :meth:`TaskStore.add_tasks`
each type keeps at most ``N`` live tasks; the oldest (lowest step, then lowest id; seed tasks are the oldest and get
no exemption) are evicted in the same transaction as the insert. Only live tasks are counted, sampled, iterated and
exported. Evicted rows are marked, never deleted, so :meth:`TaskStore.rewind` to step ``s`` restores the buffers
exactly as they were at ``s`` (it un-evicts what was evicted after ``s``), and an evicted task still counts as a
duplicate: the buffer does not grow back with tasks it already dropped.

Not in scope: concurrent writers from several processes beyond what SQLite's locking gives (one run = one writer).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from azr.tasks.export import write_jsonl
from azr.tasks.parsing import canonical_input, canonical_program
from azr.types import TASK_TYPES, Task, TaskType

__all__ = [
    "DB_NAME",
    "RolloutRow",
    "TaskStore",
    "content_hash",
    "store_path",
]

DB_NAME = "tasks.sqlite"
SCHEMA_VERSION = 3  # 2: tasks.evicted_at; 3: rollouts.outcome, rollouts.flags

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    program TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL,
    step INTEGER NOT NULL,
    origin TEXT NOT NULL,
    n_solve_attempts INTEGER NOT NULL DEFAULT 0,
    n_solved INTEGER NOT NULL DEFAULT 0,
    evicted_at INTEGER,
    UNIQUE (type, hash)
);
CREATE INDEX IF NOT EXISTS tasks_type_step ON tasks (type, step);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step INTEGER NOT NULL,
    role TEXT NOT NULL,
    type TEXT NOT NULL,
    prompt TEXT NOT NULL,
    reply TEXT NOT NULL,
    parse_status TEXT NOT NULL,
    reward REAL,
    advantage REAL,
    timings TEXT NOT NULL DEFAULT '{}',
    task_id INTEGER,
    outcome TEXT,
    flags TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS rollouts_step ON rollouts (step);
"""

_COLUMNS = (
    "id, type, program, inputs, outputs, message, step, origin, n_solve_attempts, n_solved, hash, evicted_at"
)
_LIVE = "evicted_at IS NULL"


def store_path(run_dir_or_db: str | Path) -> Path:
    """The database file of a run: ``RUN_DIR/tasks.sqlite``, or the path itself when it names a file."""
    p = Path(run_dir_or_db)
    return p / DB_NAME if p.is_dir() or not p.suffix else p


def content_hash(task_type: TaskType | str, program: str, inputs: Sequence[str]) -> str:
    """SHA-256 of the normalised program and inputs; the dedup key within one task type."""
    payload = json.dumps([str(task_type), canonical_program(program), [canonical_input(i) for i in inputs]])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class RolloutRow:
    """One generated reply, as logged."""

    step: int
    role: str
    type: str
    prompt: str
    reply: str
    parse_status: str
    reward: float | None = None
    advantage: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    task_id: int | None = None
    outcome: str | None = None
    flags: list[dict[str, str]] = field(default_factory=list)


class TaskStore:
    """The task buffers and rollout log of one run. Use as a context manager or call :meth:`close`.

    ``cap`` > 0 bounds the live tasks per type (see the module docstring); 0 keeps every task.
    """

    def __init__(self, path: str | Path, cap: int = 0) -> None:
        self.path = store_path(path)
        self.cap = int(cap)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(
            "BEGIN IMMEDIATE;"
            + _SCHEMA
            + "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', "
            f"'{SCHEMA_VERSION}'); COMMIT;"
        )
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older database up to date: version 1 gets ``tasks.evicted_at`` (every existing task stays
        live), version 2 ``rollouts.outcome`` (NULL: not recorded) and ``rollouts.flags`` (``[]``)."""
        tasks = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        rollouts = {row[1] for row in self._db.execute("PRAGMA table_info(rollouts)")}
        missing = [
            ("tasks", "evicted_at", "INTEGER", tasks),
            ("rollouts", "outcome", "TEXT", rollouts),
            ("rollouts", "flags", "TEXT NOT NULL DEFAULT '[]'", rollouts),
        ]
        missing = [m for m in missing if m[1] not in m[3]]
        if not missing:
            return
        with self._tx() as db:
            for table, column, decl, _ in missing:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- tasks ---------------------------------------------------------------------------------------------

    def add_tasks(self, tasks: Iterable[Task], step: int) -> int:
        """Insert tasks at ``step`` in one transaction, skipping duplicates (evicted tasks included), and enforce
        the buffer cap in the same transaction; return how many were added."""
        rows = [
            (
                str(TaskType(t.type)),
                t.program,
                json.dumps(list(t.inputs)),
                json.dumps(list(t.outputs)),
                t.message,
                content_hash(t.type, t.program, t.inputs),
                int(step),
                t.origin,
            )
            for t in tasks
        ]
        if not rows:
            return 0
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO tasks (type, program, inputs, outputs, message, hash, step, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (type, hash) DO NOTHING",
                rows,
            )
            added = db.total_changes - before
            if self.cap > 0:
                _evict(db, self.cap, int(step), {r[0] for r in rows})
            return added

    def contains(self, task: Task) -> bool:
        """Whether a task with the same type, normalised program and inputs is stored (live or evicted)."""
        h = content_hash(task.type, task.program, task.inputs)
        row = self._db.execute("SELECT 1 FROM tasks WHERE type = ? AND hash = ?", (str(task.type), h))
        return row.fetchone() is not None

    def count(self, type: TaskType | str | None = None) -> int:
        """Live tasks (of one type, or all)."""
        if type is None:
            return int(self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE {_LIVE}").fetchone()[0])
        sql = f"SELECT COUNT(*) FROM tasks WHERE type = ? AND {_LIVE}"
        return int(self._db.execute(sql, (str(type),)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Live tasks per type, every type present (zero when empty)."""
        out = {str(t): 0 for t in TASK_TYPES}
        for t, n in self._db.execute(f"SELECT type, COUNT(*) FROM tasks WHERE {_LIVE} GROUP BY type"):
            out[t] = n
        return out

    def get(self, task_id: int) -> Task | None:
        """The task with this id, live or evicted (``extra["evicted_at"]`` says when), or None."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (int(task_id),)).fetchone()
        return None if row is None else _task(row)

    def _ids(self, type: TaskType | str, where: str = "", args: tuple[object, ...] = ()) -> list[int]:
        sql = f"SELECT id FROM tasks WHERE type = ? AND {_LIVE} {where} ORDER BY id"
        return [r[0] for r in self._db.execute(sql, (str(type), *args))]

    def _fetch(self, ids: Sequence[int]) -> list[Task]:
        if not ids:
            return []
        marks = ",".join("?" * len(set(ids)))
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({marks})", tuple(set(ids)))
        by_id = {r[0]: _task(r) for r in rows}
        return [by_id[i] for i in ids]

    def sample_references(
        self, type: TaskType | str, k: int, rng: random.Random, recency: bool = False
    ) -> list[Task]:
        """Up to ``k`` distinct tasks of ``type``: uniform, or with ``recency`` weight proportional to id rank.

        Recency sampling is weighted sampling without replacement (Efraimidis-Spirakis keys): the i-th oldest of
        n tasks has weight i, so the newest is n times as likely as the oldest to be drawn first.
        """
        ids = self._ids(type)
        k = min(max(k, 0), len(ids))
        if not recency:
            return self._fetch(rng.sample(ids, k))
        keyed = sorted(((rng.random() ** (1.0 / (rank + 1)), i) for rank, i in enumerate(ids)), reverse=True)
        return self._fetch([i for _, i in keyed[:k]])

    def sample_for_solving(self, type: TaskType | str, n: int, step: int, rng: random.Random) -> list[Task]:
        """``n`` tasks for the solvers at ``step``: those added at ``step - 1`` first (in random order), then
        uniform draws without replacement from the rest; when the buffer holds fewer than ``n`` tasks, the list is
        filled up with uniform draws with replacement. Empty when the buffer is empty.
        """
        newest = self._ids(type, "AND step = ?", (step - 1,))
        rest = self._ids(type, "AND step != ?", (step - 1,))
        rng.shuffle(newest)
        chosen = newest[:n]
        chosen += rng.sample(rest, min(n - len(chosen), len(rest)))
        pool = newest + rest
        while pool and len(chosen) < n:
            chosen.append(rng.choice(pool))
        return self._fetch(chosen)

    def record_solve_stats(self, task_id: int, attempts: int, solved: int) -> None:
        """Add ``attempts`` solve attempts of which ``solved`` succeeded to a task's statistics."""
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET n_solve_attempts = n_solve_attempts + ?, n_solved = n_solved + ? WHERE id = ?",
                (int(attempts), int(solved), int(task_id)),
            )

    def record_solve_stats_many(self, stats: Iterable[tuple[int, int, int]]) -> None:
        """:meth:`record_solve_stats` for many ``(task_id, attempts, solved)`` in one transaction."""
        rows = [(int(a), int(s), int(i)) for i, a, s in stats]
        with self._tx() as db:
            db.executemany(
                "UPDATE tasks SET n_solve_attempts = n_solve_attempts + ?, n_solved = n_solved + ? WHERE id = ?",
                rows,
            )

    def evict(self, cap: int, step: int, type: TaskType | str | None = None) -> int:
        """Evict the oldest live tasks (lowest step, then id) beyond ``cap`` per type, marking them as evicted at
        ``step``; returns how many. ``cap <= 0`` means unbounded. :meth:`add_tasks` calls this with the store's cap.
        """
        if cap <= 0:
            return 0
        types = {str(type)} if type is not None else {str(t) for t in TASK_TYPES}
        with self._tx() as db:
            return _evict(db, cap, int(step), types)

    # -- rollouts, resume, export --------------------------------------------------------------------------

    def log_rollouts(self, rows: Iterable[RolloutRow | Mapping[str, object]]) -> int:
        """Append rollout rows (dataclasses or mappings with the same keys) in one transaction."""
        recs: list[dict[str, Any]] = [asdict(r) if isinstance(r, RolloutRow) else dict(r) for r in rows]
        data = [
            (
                int(r["step"]),
                str(r["role"]),
                str(r["type"]),
                str(r["prompt"]),
                str(r["reply"]),
                str(r["parse_status"]),
                r.get("reward"),
                r.get("advantage"),
                json.dumps(r.get("timings") or {}),
                r.get("task_id"),
                r.get("outcome"),
                json.dumps(list(r.get("flags") or [])),
            )
            for r in recs
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO rollouts (step, role, type, prompt, reply, parse_status, reward, advantage, timings,"
                " task_id, outcome, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                data,
            )
        return len(data)

    def rollouts(self, step: int | None = None) -> list[RolloutRow]:
        """Logged rollouts, in insertion order (all, or those of one step)."""
        sql = (
            "SELECT step, role, type, prompt, reply, parse_status, reward, advantage, timings, task_id, outcome,"
            " flags FROM rollouts"
        )
        cur = self._db.execute(sql + (" WHERE step = ? ORDER BY id" if step is not None else " ORDER BY id"),
                               (() if step is None else (step,)))  # fmt: skip
        return [_rollout(r) for r in cur]

    def rewind(self, step: int) -> tuple[int, int]:
        """Put the buffers back as they were at ``step``: delete tasks and rollouts added after it and make live
        again the tasks evicted after it; return (tasks, rollouts) deleted.

        Used on resume: the checkpoint of ``step`` is the truth and anything written after it is replayed.
        Solve statistics recorded after ``step`` on older tasks are not undone.
        """
        with self._tx() as db:
            t = db.execute("DELETE FROM tasks WHERE step > ?", (int(step),)).rowcount
            r = db.execute("DELETE FROM rollouts WHERE step > ?", (int(step),)).rowcount
            db.execute("UPDATE tasks SET evicted_at = NULL WHERE evicted_at > ?", (int(step),))
        return t, r

    def max_step(self) -> int | None:
        """The highest step of any task or rollout, or None for an empty store."""
        row = self._db.execute(
            "SELECT MAX(s) FROM (SELECT MAX(step) AS s FROM tasks UNION ALL SELECT MAX(step) FROM rollouts)"
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def iter_tasks(self, type: TaskType | str | None = None) -> Iterator[Task]:
        """Every live task (of one type or all), in id order."""
        where, args = (
            (f"WHERE type = ? AND {_LIVE}", (str(type),)) if type is not None else (f"WHERE {_LIVE}", ())
        )
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY id", args):
            yield _task(row)

    def export_jsonl(self, path: str | Path, type: TaskType | str | None = None, fmt: str = "azr") -> int:
        """Write the live tasks (of one type or all) as JSON lines in ``fmt`` (:mod:`azr.tasks.export`), atomically;
        return how many."""
        return write_jsonl(self.iter_tasks(type), path, fmt)


def _evict(db: sqlite3.Connection, cap: int, step: int, types: Iterable[str]) -> int:
    """Inside a transaction: mark the oldest live tasks of each type beyond ``cap`` as evicted at ``step``."""
    evicted = 0
    for t in sorted(types):
        cur = db.execute(
            f"UPDATE tasks SET evicted_at = ?1 WHERE id IN (SELECT id FROM tasks WHERE type = ?2 AND {_LIVE}"
            " ORDER BY step DESC, id DESC LIMIT -1 OFFSET ?3)",
            (step, t, cap),
        )
        evicted += cur.rowcount
    return evicted


def _rollout(r: Sequence[Any]) -> RolloutRow:
    step, role, type_, prompt, reply, parse_status, reward, advantage, timings, task_id, outcome, flags = r
    return RolloutRow(
        step, role, type_, prompt, reply, parse_status, reward, advantage,
        json.loads(timings), task_id, outcome, json.loads(flags),
    )  # fmt: skip


def _task(row: Sequence[Any]) -> Task:
    tid, typ, program, inputs, outputs, message, step, origin, attempts, solved, h, evicted_at = row
    extra: dict[str, object] = {"n_solve_attempts": attempts, "n_solved": solved, "hash": h}
    if evicted_at is not None:
        extra["evicted_at"] = evicted_at
    return Task(
        TaskType(typ),
        program,
        tuple(json.loads(inputs)),
        tuple(json.loads(outputs)),
        message,
        tid,
        step,
        origin,
        extra,
    )
