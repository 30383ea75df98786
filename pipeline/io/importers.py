"""Raw crawls to input shards: WARC (main text by trafilatura, through datatrove's
extractor sandbox), WET and JSONL(.gz) files to Parquet with id, text, url, crawl, date.

One input file is one unit of work (a worker process each). Its rows stream out in
parts of at most `part_rows`, written atomically as <stem>-<path hash>-<n>.parquet;
the file is marked done in OUT's import ledger only after its last part, so an
interrupted import redoes just the unfinished files, and a rerun skips done ones.

Nothing is dropped silently: a WARC/WET record that is not a document (a request,
metadata, an image) is counted by reason in the summary; an HTML page whose main
text cannot be extracted stays a row with empty text and an `import_note`, so
`thresher curate` rejects it visibly (empty_text); a JSONL line that is not JSON
stays a row with null text and the error, so curate quarantines it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from thresher.pipeline.io import storage
from thresher.pipeline.engine.shards import InputError, expand_inputs
from thresher.pipeline.io.storage import Store, state_folder

log = logging.getLogger(__name__)

FORMATS = ("warc", "wet", "jsonl")
SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("url", pa.string()), ("crawl", pa.string()),
    ("date", pa.string()), ("source_file", pa.string()), ("source_record", pa.int64()),
    ("import_note", pa.string()),
])
_SUFFIXES = {"warc": (".warc", ".warc.gz"), "wet": (".wet", ".wet.gz", ".warc.wet.gz"),
             "jsonl": (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")}
_CRAWL_NAME = re.compile(r"CC-MAIN-\d{4}-\d{2}")
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def import_files(fmt: str, inputs: list[str], out_dir: str, crawl: str | None = None,
                 part_rows: int = 20_000, workers: int | None = None,
                 extract_timeout: float = 5.0, state_dir: str | None = None,
                 address: str | None = None) -> dict:
    """Import every input file not yet done; a summary of this call. Files go to local
    worker processes, or to Ray tasks when a cluster is named (address or RAY_ADDRESS)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    files = expand_inputs(inputs, _SUFFIXES[fmt])
    out = Store.at(out_dir)
    ledger = ImportLedger(_import_state(out, state_dir))
    todo, done_before = [], 0
    for path in files:
        fp = _fingerprint(path)
        if ledger.is_done(path, fp):
            done_before += 1
        else:
            todo.append((path, fp))
    summary = {"files": len(files), "already_done": done_before, "imported": 0, "rows": 0,
               "skipped": Counter(), "notes": Counter(), "errors": []}
    log.info("import %s: %d files, %d already done, %d to import", fmt, len(files),
             done_before, len(todo))
    started = time.time()
    args = (out.location, crawl, part_rows, extract_timeout)
    runs = ([] if not todo
            else _on_ray(fmt, todo, args, address) if address or os.environ.get("RAY_ADDRESS")
            else _in_processes(fmt, todo, args, workers))
    for path, fp, result, failure in runs:
        summary["imported"] += failure is None
        if failure:  # the worker itself failed: not marked done, the next import retries
            summary["errors"].append(f"{path}: {failure}")
            log.error("import of %s failed: %s", path, failure)
            continue
        ledger.finish(path, fp, result)
        summary["rows"] += result["rows"]
        summary["skipped"].update(result["skipped"])
        summary["notes"].update(result["notes"])
        if result["error"]:
            summary["errors"].append(f"{path}: {result['error']}")
        log.info("imported %d/%d: %s (%d rows in %d parts%s)", summary["imported"],
                 len(todo), path, result["rows"], result["parts"],
                 f"; stopped early: {result['error']}" if result["error"] else "")
    ledger.close()
    summary["seconds"] = round(time.time() - started, 1)
    return summary


def _in_processes(fmt, todo, args, workers):
    """(path, fingerprint, result, failure) per file, from a local process pool."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    # Spawned, not forked: a fork of a process that has Ray running (a notebook, the
    # tests) inherits Ray's connections and signal handlers, and can break them.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(import_file, fmt, path, *args): (path, fp) for path, fp in todo}
        for future in as_completed(futures):
            error = future.exception()
            yield (*futures[future], None if error else future.result(),
                   f"{type(error).__name__}: {error}" if error else None)


def _on_ray(fmt, todo, args, address):
    """The same from Ray tasks across a cluster (retried if a worker dies), with a
    bounded number in flight so a crawl of 100k files is not 100k queued tasks."""
    import ray

    from thresher.pipeline.engine import dag

    dag.connect(address)
    task = ray.remote(num_cpus=1, max_retries=3)(import_file)
    window = max(4, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending, queue = {}, list(todo)
    while queue or pending:
        while queue and len(pending) < window:
            path, fp = queue.pop(0)
            pending[task.remote(fmt, path, *args)] = (path, fp)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=60)
        if not ready:  # say why nothing moves instead of waiting without a word
            log.warning("import: %d files in flight, none finished for 60 s; free on the "
                        "cluster: %s (each file needs 1 CPU)", len(pending),
                        ray.available_resources())
            continue
        path, fp = pending.pop(ready[0])
        try:
            yield path, fp, ray.get(ready[0]), None
        except Exception as err:  # noqa: BLE001 - a task that failed all its retries
            yield path, fp, None, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def import_file(fmt: str, path: str, out_dir: str, crawl: str | None, part_rows: int,
                extract_timeout: float) -> dict:
    """One input file to parts (in a worker process); its counts."""
    out = Store.at(out_dir)
    prefix = _part_prefix(path)
    for old in out.files("", f"{prefix}-*.parquet"):  # a crashed earlier attempt
        out.delete(old)
    crawl = crawl or _crawl_name(path)
    result = {"rows": 0, "parts": 0, "skipped": Counter(), "notes": Counter(), "error": None}
    rows: list[dict] = []

    def flush() -> None:
        if rows:
            name = f"{prefix}-{result['parts']:05d}.parquet"
            out.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out.path(name))
            result["parts"] += 1
            rows.clear()

    records = _jsonl_rows(path) if fmt == "jsonl" else _warc_rows(path, fmt, extract_timeout)
    try:
        for row in records:
            if "skip" in row:
                result["skipped"][row["skip"]] += 1
                continue
            row.setdefault("crawl", crawl)
            row["source_file"] = path
            if row.get("import_note"):
                result["notes"][row["import_note"]] += 1
            rows.append(row)
            result["rows"] += 1
            if len(rows) >= part_rows:
                flush()
    except Exception as err:  # a truncated or corrupt file: keep what was read
        result["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    flush()
    return result


def _warc_rows(path: str, fmt: str, extract_timeout: float) -> Iterator[dict]:
    wanted = "response" if fmt == "warc" else "conversion"
    extract = _Extractor(extract_timeout) if fmt == "warc" else None
    try:
        with storage.open_input(path) as handle:
            # A damaged record raises (digests, length) instead of passing on half a page.
            records = _CheckedArchive(handle, check_digests="raise")
            for index, record in enumerate(records):
                if record.rec_type != wanted:
                    yield {"skip": f"{record.rec_type} record"}
                    continue
                yield _record_row(record, index, extract)
            if records.cut_short:
                raise EOFError("the gzip stream ends inside a record: the file is truncated")
    finally:
        if extract:
            extract.close()


def _CheckedArchive(*args, **kwargs):
    """warcio's ArchiveIterator that also notes a gzip member cut off at the end of the
    file, which warcio itself takes for a clean end."""
    from warcio.archiveiterator import ArchiveIterator

    class Checked(ArchiveIterator):
        cut_short = False

        def close(self):
            decompressor = self.reader.decompressor if self.reader else None
            self.cut_short = decompressor is not None and not getattr(decompressor, "eof", True)
            super().close()

    return Checked(*args, **kwargs)


def _record_row(record, index: int, extract) -> dict:
    headers = record.rec_headers
    row = {"id": (headers.get_header("WARC-Record-ID") or "").strip("<>").removeprefix("urn:uuid:"),
           "url": headers.get_header("WARC-Target-URI"), "date": headers.get_header("WARC-Date"),
           "source_record": index, "import_note": None}
    payload = record.content_stream().read()
    if getattr(record.raw_stream, "limit", 0):  # bytes the record declares but the file lacks
        raise EOFError(f"record {index} is truncated ({record.raw_stream.limit} of "
                       f"{record.length} bytes missing)")
    if extract is None:  # WET: the text is the payload
        row["text"] = payload.decode("utf-8", errors="replace")
        return row
    mime = _mime(record)
    if mime not in _HTML_TYPES:
        return {"skip": f"not HTML ({mime or 'no content type'})"}
    row["text"], row["import_note"] = extract(_decode(payload, record))
    return row


def _mime(record) -> str | None:
    declared = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    if not declared and record.http_headers is not None:
        declared = record.http_headers.get_header("Content-Type")
    return declared.split(";")[0].strip().lower() if declared else None


def _decode(payload: bytes, record) -> str:
    """The page as text: the declared charset if it decodes, else UTF-8 with
    replacement characters (trafilatura copes; the page is not lost)."""
    content_type = record.http_headers.get_header("Content-Type") if record.http_headers else ""
    match = re.search(r"charset=([\w.:-]+)", content_type or "", re.I)
    for charset in ([match.group(1)] if match else []) + ["utf-8"]:
        try:
            return payload.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
    return payload.decode("utf-8", errors="replace")


class _Extractor:
    """trafilatura's main-text extraction through datatrove's extractor and its
    sandbox: a page that takes longer than the timeout, or kills the extractor,
    becomes an empty text with a note instead of stalling the import."""

    def __init__(self, timeout: float):
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.extractors.base import ExtractorSandbox

        self.trafilatura = Trafilatura(timeout=timeout)
        self.sandbox = ExtractorSandbox(timeout=timeout).__enter__()

    def __call__(self, html: str) -> tuple[str, str | None]:
        try:
            text = self.sandbox.process_document(html, self._in_child)
        except TimeoutError:
            return "", "extraction timed out"
        except EOFError:
            return "", "extractor process died"
        except Exception as err:  # trafilatura's own errors on odd markup
            return "", f"extraction failed: {type(err).__name__}"
        return (text, None) if text else ("", "no main text found")

    def _in_child(self, html: str) -> str:
        # The sandbox forks: in a Ray worker the child inherits Ray's SIGTERM handler,
        # which must not run when the sandbox terminates the child.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return self.trafilatura.extract(html)

    def close(self) -> None:
        self.sandbox.__exit__(None, None, None)


def _jsonl_rows(path: str) -> Iterator[dict]:
    with storage.open_input(path) as raw:
        binary = gzip.GzipFile(fileobj=raw) if path.split("?")[0].endswith(".gz") else raw
        for index, line in enumerate(io.TextIOWrapper(binary, encoding="utf-8", errors="replace")):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except ValueError as err:
                yield {"id": None, "text": None, "source_record": index,
                       "import_note": f"line {index + 1} is not a JSON object: {err}"[:300]}
                continue
            text = record.get("text")
            yield {"id": _str(record.get("id")), "text": text if isinstance(text, str) else None,
                   "url": _str(record.get("url")), "date": _str(record.get("date")),
                   **({"crawl": _str(record["crawl"])} if record.get("crawl") else {}),
                   "source_record": index,
                   "import_note": None if isinstance(text, str) else "no string `text` field"}


def _str(value) -> str | None:
    return None if value is None else str(value)


def _crawl_name(path: str) -> str:
    """CC-MAIN-YYYY-WW when the path names one, else the input file's folder name."""
    match = _CRAWL_NAME.search(path)
    return match.group(0) if match else path.split("?")[0].rstrip("/").rsplit("/", 2)[-2]


def _part_prefix(path: str) -> str:
    stem = path.split("?")[0].rsplit("/", 1)[-1].split(".")[0]
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _import_state(out: Store, state_dir: str | None) -> Path:
    """Where imports.sqlite lives: never among the shards themselves, or reading the
    shards folder as a dataset would trip on it. Locally: OUT/_thresher/ (readers skip
    names starting with `_`); remote outputs: the driver's state folder."""
    if state_dir or not out.is_local:
        return state_folder(out, state_dir)
    folder = Path(out.root) / "_thresher"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fingerprint(path: str) -> str:
    info = storage.file_info(path)
    return f"{info.size}:{info.mtime_ns or ''}"


class ImportLedger:
    """Which input files an import has finished (SQLite, next to the run ledger)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(folder / "imports.sqlite", isolation_level=None, timeout=30)
        self.db.execute("CREATE TABLE IF NOT EXISTS imports (path TEXT PRIMARY KEY, "
                        "fingerprint TEXT, rows INTEGER, parts INTEGER, skipped TEXT, "
                        "error TEXT, at REAL)")

    def is_done(self, path: str, fingerprint: str) -> bool:
        row = self.db.execute("SELECT fingerprint FROM imports WHERE path = ?", (path,)).fetchone()
        return row is not None and row[0] == fingerprint

    def finish(self, path: str, fingerprint: str, result: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO imports VALUES (?,?,?,?,?,?,?)",
                        (path, fingerprint, result["rows"], result["parts"],
                         json.dumps(result["skipped"]), result["error"], time.time()))

    def close(self) -> None:
        self.db.close()
