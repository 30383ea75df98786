"""Paths and URIs: local files, or anything pyarrow's filesystems open (s3://, gs://,
hdfs://, file://).

Input shards keep the form the user gave (a local path made absolute, or a URI with
its query, e.g. `?endpoint_override=...`), because that string is the shard's key in
the ledger and what a Ray task opens again. Endpoints and credentials are best given
the way pyarrow reads them anyway (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).

Writes are atomic: object stores publish an object only when its upload completes,
so there a file is written in place; other filesystems write a temporary name and
rename it.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_GLOB_CHARS = re.compile(r"[*?\[]")
# Filesystems where a path starts with the bucket (the URI's host).
_BUCKET_SCHEMES = {"s3", "gs", "gcs", "abfs", "abfss", "az"}
_OBJECT_STORES = (pafs.S3FileSystem, pafs.GcsFileSystem)


def is_uri(location: str) -> bool:
    return "://" in location


def has_glob(location: str) -> bool:
    return bool(_GLOB_CHARS.search(urlsplit(location).path if is_uri(location) else location))


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it for a local path or a URI."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    parts = urlsplit(location)
    if parts.scheme == "file":
        return pafs.LocalFileSystem(), parts.path
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    inner = parts.netloc + path if parts.scheme in _BUCKET_SCHEMES else (path or "/")
    return _filesystem(parts.scheme, parts.netloc, parts.query), inner


@lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str, query: str) -> pafs.FileSystem:
    """One filesystem per endpoint, built once per process: building an S3 one may
    look up the bucket's region over the network."""
    uri = f"{scheme}://{netloc}/" + (f"?{query}" if query else "")
    return pafs.FileSystem.from_uri(uri)[0]


def uri_of(base: str, inner: str) -> str:
    """The location (as the user would write it) of `inner`, a path on base's filesystem."""
    if not is_uri(base):
        return inner
    parts = urlsplit(base)
    if parts.scheme == "file":
        return f"file://{inner}"
    query = f"?{parts.query}" if parts.query else ""
    if parts.scheme in _BUCKET_SCHEMES:
        return f"{parts.scheme}://{inner}{query}"
    return f"{parts.scheme}://{parts.netloc}{inner}{query}"


def glob_files(pattern: str) -> list[str]:
    """Files matching a glob (`*`, `?`, `[...]` within a path segment, `**` across
    segments), as locations in the pattern's own form. Lists the deepest folder
    without glob characters recursively: one listing on an object store."""
    fs, inner = resolve(pattern)
    segments = inner.split("/")
    first = next(i for i, s in enumerate(segments) if _GLOB_CHARS.search(s))
    base = "/".join(segments[:first]) or "/"
    regex = _glob_regex(inner)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    found = sorted(info.path for info in fs.get_file_info(selector)
                   if info.type == pafs.FileType.File and not info.base_name.startswith(".")
                   and regex.fullmatch(info.path))
    return [uri_of(pattern, path) for path in found]


def below(location: str, pattern: str) -> str:
    """`location/pattern`, keeping a URI's query at the end."""
    if not is_uri(location):
        return location.rstrip("/") + "/" + pattern
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + pattern))


def _glob_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def file_info(location: str) -> pafs.FileInfo:
    fs, inner = resolve(location)
    return fs.get_file_info(inner)


def open_input(location: str) -> pa.NativeFile:
    fs, inner = resolve(location)
    return fs.open_input_file(inner)


def state_folder(store: Store, state_dir: str | Path | None = None) -> Path:
    """Where the driver keeps the ledger for an output: given, else the output folder
    when it is local, else $THRESHER_STATE_DIR (or ~/.local/state/thresher)/<output>."""
    if state_dir:
        return Path(state_dir).resolve()
    if store.is_local:
        return Path(store.root)
    base = Path(os.environ.get("THRESHER_STATE_DIR")
                or Path.home() / ".local" / "state" / "thresher")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", store.location.split("?")[0]).strip("_")
    return base / slug


@dataclass(frozen=True)
class Store:
    """An output location: OUT/curated, OUT/rejected, ... on any filesystem."""

    location: str  # as given (absolute for local paths)

    @staticmethod
    def at(location: str) -> "Store":
        return Store(location if is_uri(location) else os.path.abspath(location))

    @property
    def fs(self) -> pafs.FileSystem:
        return resolve(self.location)[0]

    @property
    def root(self) -> str:
        return resolve(self.location)[1]

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *(n for n in names if n)])

    def uri(self, *names: str) -> str:
        """Where a file is, for people: a local path or a URI."""
        return uri_of(self.location, self.path(*names))

    def files(self, folder: str, pattern: str = "*") -> list[str]:
        """Paths of the files directly in `folder` whose names match `pattern`."""
        regex = _glob_regex(pattern)
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return sorted(info.path for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.File
                      and regex.fullmatch(info.path.rsplit("/", 1)[-1]))

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def delete(self, path: str) -> None:
        self.fs.delete_file(path)

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as handle:
            return handle.read().decode("utf-8")

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, columns=columns, filesystem=self.fs)

    def num_rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as handle:
            return pq.read_metadata(handle).num_rows

    def schema(self, path: str) -> pa.Schema:
        with self.fs.open_input_file(path) as handle:
            return pq.read_schema(handle)

    def write_table(self, table: pa.Table, path: str) -> None:
        _write(self.fs, path, lambda handle: pq.write_table(table, handle, compression="zstd"))

    def write_text(self, path: str, text: str) -> None:
        _write(self.fs, path, lambda handle: handle.write(text.encode("utf-8")))

    def write_bytes(self, path: str, data: bytes) -> None:
        _write(self.fs, path, lambda handle: handle.write(data))


def write_text(location: str, text: str) -> None:
    """Write a small text file (a manifest, a JSON summary) atomically."""
    fs, inner = resolve(str(location))
    _write(fs, inner, lambda handle: handle.write(text.encode("utf-8")))


def _write(fs: pafs.FileSystem, path: str, write) -> None:
    folder, name = path.rsplit("/", 1)
    if isinstance(fs, _OBJECT_STORES):  # no folders to make, no rename to do
        with fs.open_output_stream(path) as handle:
            write(handle)
        return
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex}-{name}"
    try:
        if isinstance(fs, pafs.LocalFileSystem):  # fsync before the rename
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with fs.open_output_stream(tmp) as handle:
                write(handle)
        fs.move(tmp, path)
    finally:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
