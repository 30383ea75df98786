"""The ledger: which input shards are done, in which run, with which counts.

SQLite in OUT/ledger.sqlite, written by the driver only. A shard becomes `done`
only after every one of its output parts has been renamed into place, so a crash
leaves it `running` and the next run redoes it after deleting its partial parts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started REAL, finished REAL, state TEXT,
    config TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS shards (
    path TEXT PRIMARY KEY, size INTEGER, fingerprint TEXT, state TEXT, run_id TEXT,
    rows_in INTEGER, curated INTEGER, rejected INTEGER, quarantined INTEGER,
    error TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS shard_numbers (
    number INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS shard_uids (
    number INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, fingerprint TEXT,
    UNIQUE (path, fingerprint));
CREATE TABLE IF NOT EXISTS shard_history (
    run_id TEXT, path TEXT, fingerprint TEXT, state TEXT, rows_in INTEGER,
    curated INTEGER, rejected INTEGER, quarantined INTEGER, error TEXT, at REAL);
"""

# States: running (in flight or crashed), done (outputs durable),
# quarantined (the whole shard is unreadable; redone only if its content changes).
FINAL_STATES = ("done", "quarantined")
COUNTS = ("rows_in", "curated", "rejected", "quarantined")


class Ledger:
    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "ledger.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def get(self, path: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM shards WHERE path = ?", (path,)).fetchone()

    def start_run(self, run_id: str, config_json: str) -> None:
        self.db.execute("INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, NULL)",
                        (run_id, time.time(), config_json))

    def finish_run(self, run_id: str, state: str, summary: dict) -> None:
        self.db.execute("UPDATE runs SET finished = ?, state = ?, summary = ? WHERE run_id = ?",
                        (time.time(), state, json.dumps(summary), run_id))

    def claim(self, run_id: str, path: str, size: int, fingerprint: str) -> None:
        """Record that this run is processing the shard (state `running`)."""
        self._set(run_id, path, size, fingerprint, "running", dict.fromkeys(COUNTS, 0), None)

    def finish_shard(self, run_id: str, path: str, size: int, fingerprint: str, state: str,
                     counts: dict, error: str | None = None) -> None:
        assert state in FINAL_STATES
        with self.db:
            self.db.execute("BEGIN")
            self._set(run_id, path, size, fingerprint, state, counts, error)
            self.db.execute("INSERT INTO shard_history VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (run_id, path, fingerprint, state, *(counts[c] for c in COUNTS),
                             error, time.time()))

    def _set(self, run_id, path, size, fingerprint, state, counts, error) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO shards VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (path, size, fingerprint, state, run_id, *(counts[c] for c in COUNTS), error,
             time.time()))

    def shard_numbers(self, shards: list[tuple[str, str]]) -> dict[str, int]:
        """A number per (path, fingerprint), given once and never reused: a step names a
        document by (number << 32 | row), 8 bytes instead of a path and a row. A shard
        whose content changed gets a new number, so no document of the new content
        takes the identity (and the decisions) of a document of the old."""
        with self.db:
            self.db.execute("BEGIN")
            if self.db.execute("SELECT COUNT(*) FROM shard_uids").fetchone()[0] == 0:
                # Numbers go on after those of the path-only table of earlier versions.
                last = self.db.execute("SELECT MAX(number) FROM shard_numbers").fetchone()[0]
                if last:
                    self.db.execute("INSERT OR REPLACE INTO sqlite_sequence (name, seq) "
                                    "VALUES ('shard_uids', ?)", (last,))
            self.db.executemany("INSERT OR IGNORE INTO shard_uids (path, fingerprint) "
                                "VALUES (?, ?)", shards)
        found = {}
        for path, fp in shards:
            found[path] = self.db.execute(
                "SELECT number FROM shard_uids WHERE path = ? AND fingerprint = ?",
                (path, fp)).fetchone()[0]
        return found

    def done_shards(self) -> list[tuple[str, str]]:
        """(path, fingerprint) of the shards done."""
        return [tuple(r) for r in self.db.execute(
            "SELECT path, fingerprint FROM shards WHERE state = 'done'")]

    def runs(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM runs ORDER BY started").fetchall()

    def shards(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM shards ORDER BY path").fetchall()

    def run_counts(self) -> list[sqlite3.Row]:
        """Per run: shards finished and their row counts."""
        return self.db.execute(
            "SELECT r.run_id, r.state, r.started, r.finished, COUNT(h.path) AS shards, "
            "COALESCE(SUM(h.rows_in),0) AS rows_in, COALESCE(SUM(h.curated),0) AS curated, "
            "COALESCE(SUM(h.rejected),0) AS rejected, "
            "COALESCE(SUM(h.quarantined),0) AS quarantined "
            "FROM runs r LEFT JOIN shard_history h ON h.run_id = r.run_id "
            "GROUP BY r.run_id ORDER BY r.started").fetchall()
