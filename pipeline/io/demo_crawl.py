"""The demo crawl: a small, mixed, web-like crawl built only from material that
package managers install, so `make curate` runs anywhere without a download.

Sources (each row has `source` and a stable pseudo-URL under .invalid):
  debian-handbook   the Debian Administrator's Handbook, HTML in 26 languages
                    (main text extracted with trafilatura)
  python-docs       the Python 3.11 HTML documentation (python3.11-doc)
  wikipedia-en      the English Wikipedia sample in gensim's test data
  fortunes          Debian fortunes: English, German, Spanish, Spanish offensive
                    (Italian is left out on purpose)
  python-source     modules of the Python standard library
  junk-*            generated: keyword spam, navigation boilerplate, shuffled
                    words, repeated lines, gibberish, so the filters have work

`write_warc` writes the same crawl as gzipped WARC files (one HTML response record per
document), so a recipe can start from raw crawl files through `thresher import`, as
FineWeb starts from Common Crawl's WARC files.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import hashlib
import html
import io
import json
import logging
import os
import subprocess
import random
import re
import shutil
import sysconfig
import uuid
from datetime import datetime, timezone
from multiprocessing import Pool
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

HANDBOOK = "/usr/share/doc/debian-handbook/html"
PYTHON_DOCS = "/usr/share/doc/python3.11/html"
FORTUNES = "/usr/share/games/fortunes"
FORTUNE_DIRS = {"": "en", "de": "de", "es": "es", "es/off": "es"}  # no `it`, by request
# The Debian packages whose files the demo takes from those folders.
FORTUNE_PACKAGES = ("fortunes", "fortunes-min", "fortunes-de", "fortunes-es", "fortunes-es-off")
CRAWL = "demo-2026-11"
DATE = "2026-11-01"
BUILD_VERSION = 2  # bump when the recipe changes, so `make` rebuilds
WARC_VERSION = 2  # the same for write_warc's output
# Where the repository keeps the Parquet demo crawl (`make` builds it there).
REPO_CRAWL = Path(__file__).resolve().parents[2] / "data" / "demo-crawl"
# Record ids are uuid5s in this namespace, so a rebuild writes the same ids.
_RECORD_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://thresher.demo.invalid/warc-record")


def build_demo_crawl(out: Path, shards: int = 8, seed: int = 0, max_pages: int | None = None) -> list[Path]:
    """Write the crawl to `out` as `shards` Parquet files; reuse a finished build."""
    out = Path(out)
    stamp = out / "_BUILD.json"
    recipe = {"version": BUILD_VERSION, "shards": shards, "seed": seed, "max_pages": max_pages}
    if stamp.exists() and json.loads(stamp.read_text()).get("recipe") == recipe:
        return sorted(out.glob("part-*.parquet"))
    docs = list(collect(seed, max_pages))
    random.Random(seed).shuffle(docs)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    paths = []
    for i in range(shards):
        part = docs[i::shards]
        path = tmp / f"part-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(part), path, row_group_size=1000, compression="zstd")
        paths.append(out / path.name)
    counts: dict[str, int] = {}
    for doc in docs:
        counts[doc["source"]] = counts.get(doc["source"], 0) + 1
    (tmp / "_BUILD.json").write_text(json.dumps(
        {"recipe": recipe, "documents": len(docs), "by_source": counts}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log.info("demo crawl: %d documents in %d shards at %s", len(docs), shards, out)
    return paths


def collect(seed: int, max_pages: int | None = None) -> Iterator[dict]:
    yield from html_pages(max_pages)
    yield from wikipedia()
    yield from fortunes()
    yield from python_source(max_pages)
    yield from junk(random.Random(seed), wikipedia_words())


def _doc(source: str, url_path: str, text: str, lang_hint: str = "") -> dict:
    url = f"https://{source}.demo.invalid/{url_path.lstrip('/')}"
    return {"id": hashlib.sha1(url.encode()).hexdigest()[:20], "text": text, "url": url,
            "source": source, "crawl": CRAWL, "date": DATE}


def html_pages(max_pages: int | None = None) -> Iterator[dict]:
    jobs = [("debian-handbook", HANDBOOK, p) for p in sorted(glob.glob(f"{HANDBOOK}/*/*.html"))]
    jobs += [("python-docs", PYTHON_DOCS, p)
             for p in sorted(glob.glob(f"{PYTHON_DOCS}/**/*.html", recursive=True))
             if "/_" not in p[len(PYTHON_DOCS):]]
    if max_pages:
        jobs = jobs[:: max(1, len(jobs) // max_pages)]
    if not jobs:
        log.warning("no HTML documentation found (install debian-handbook, python3.11-doc)")
    with Pool(processes=max(1, min(4, os.cpu_count() or 1))) as pool:
        for doc in pool.imap(_extract, jobs, chunksize=16):
            if doc:
                yield doc


def _extract(job: tuple[str, str, str]) -> dict | None:
    import trafilatura

    source, root, path = job
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = trafilatura.extract(handle.read(), include_comments=False)
    return _doc(source, os.path.relpath(path, root), text) if text else None


def wikipedia() -> Iterator[dict]:
    path = _gensim_file("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    if path is None:
        log.warning("gensim's Wikipedia sample not found (pip install gensim)")
        return
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    for title, markup, _page_id in extract_pages(bz2.BZ2File(path)):
        text = filter_wiki(markup).strip()
        if text and not text.upper().startswith("#REDIRECT"):
            yield _doc("wikipedia-en", "wiki/" + title.replace(" ", "_"), text)


def wikipedia_words() -> list[str]:
    words: list[str] = []
    for doc in wikipedia():
        words += doc["text"].split()
        if len(words) > 200_000:
            break
    return words or "the quick brown fox jumps over the lazy dog".split()


def _gensim_file(name: str) -> str | None:
    try:
        import gensim
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", name)
    return path if os.path.exists(path) else None


def package_files(package: str) -> list[str]:
    """The files a Debian package installed (none when it is not installed)."""
    listed = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True)
    return listed.stdout.splitlines() if listed.returncode == 0 else []


def fortunes(root: str = FORTUNES, lister=package_files) -> Iterator[dict]:
    # Only files that the fortunes packages named here installed: another fortunes-*
    # package (Italian, say) links its files into the same folders.
    ours = {f for package in FORTUNE_PACKAGES for f in lister(package)}
    for sub, lang in FORTUNE_DIRS.items():
        folder = os.path.join(root, sub).rstrip("/")
        owned = {os.path.basename(f) for f in ours if os.path.dirname(f) == folder}
        for name in sorted(owned):
            path = os.path.join(folder, name)
            if name.endswith(".dat") or not os.path.isfile(path):
                continue
            if not name.endswith(".u8") and name + ".u8" in owned:
                continue  # the .u8 twin is the UTF-8 one
            source = "fortunes-es-off" if sub == "es/off" else f"fortunes-{lang}"
            for i, text in enumerate(_read_fortunes(path, rot13=sub.endswith("off"))):
                yield _doc(source, f"{sub}/{name.removesuffix('.u8')}/{i}", text)


def _read_fortunes(path: str, rot13: bool = False) -> list[str]:
    raw = open(path, "rb").read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if rot13:  # offensive fortunes are stored ROT13-encoded (`fortune -o` decodes them)
        text = codecs.decode(text, "rot13")
    return [f.strip() for f in text.split("\n%\n") if f.strip()]


def python_source(max_files: int | None = None) -> Iterator[dict]:
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(p for p in glob.glob(f"{stdlib}/**/*.py", recursive=True)
                   if "/test" not in p and "site-packages" not in p)
    for path in files[: max_files or 1500]:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        if text.strip():
            yield _doc("python-source", os.path.relpath(path, stdlib), text)


_SPAM = ["cheap", "casino", "replica watches", "payday loans", "free followers", "crypto bonus",
         "weight loss pills", "best price", "discount", "buy now", "limited offer", "click here"]
_NAV = ["Home", "About us", "Contact", "Login", "Register", "Cart", "FAQ", "Blog", "Careers",
        "Privacy policy", "Terms of use", "Cookie settings", "Sitemap", "Newsletter"]


def junk(rng: random.Random, words: list[str], per_kind: int = 600) -> Iterator[dict]:
    """Web junk that a curation pipeline must remove, in five kinds."""
    for i in range(per_kind):
        kws = rng.sample(_SPAM, 4)
        spam = " ".join(f"{rng.choice(kws)} {rng.choice(kws)}!" for _ in range(rng.randint(20, 80)))
        yield _doc("junk-spam", f"spam/{i}", spam)

        nav = " | ".join(rng.sample(_NAV, rng.randint(5, len(_NAV))))
        yield _doc("junk-boilerplate", f"nav/{i}",
                   f"{nav}\nCopyright © {rng.randint(2005, 2026)} All rights reserved.\n{nav}")

        start = rng.randrange(max(1, len(words) - 300))
        chunk = words[start:start + rng.randint(60, 300)]
        rng.shuffle(chunk)
        yield _doc("junk-shuffled", f"shuffled/{i}", " ".join(chunk))

        line = " ".join(words[start:start + rng.randint(4, 12)])
        yield _doc("junk-repeated", f"repeated/{i}", "\n".join([line] * rng.randint(10, 60)))

        gib = " ".join("".join(rng.choice("qxzjkvbwpfgh") for _ in range(rng.randint(2, 12)))
                       for _ in range(rng.randint(20, 200)))
        yield _doc("junk-gibberish", f"gibberish/{i}", gib)


def ensure_demo_crawl(folder: Path, shards: int = 8, seed: int = 0) -> list[Path]:
    """The Parquet shards in `folder`, built there first when it holds none. A folder
    with other files and no demo-crawl stamp is refused: building replaces the folder."""
    folder = Path(folder)
    found = sorted(folder.glob("part-*.parquet"))
    if found:
        return found
    if folder.exists() and any(folder.iterdir()) and not (folder / "_BUILD.json").exists():
        from thresher.pipeline.engine.shards import InputError

        raise InputError(f"{folder} holds no part-*.parquet and is not a demo crawl folder; "
                         f"give --from a demo crawl, or a new or empty folder to build one in")
    return build_demo_crawl(folder, shards=shards, seed=seed)


def write_warc(parquet_dir: Path, out: Path, copies: int = 1,
               limit: int | None = None) -> list[Path]:
    """Write the Parquet crawl in `parquet_dir` as gzipped WARC files under
    OUT/<crawl>/, one per shard and copy; reuse a finished build of the same recipe.

    The folder is named after the crawl because `thresher import` takes a file's crawl
    from its folder (CC-MAIN-YYYY-WW names only fit Common Crawl's own files). Copy k
    of a document gets its own URL and record id, so 4 copies are 4x distinct records.
    """
    from thresher.pipeline.engine.shards import InputError

    parquet_dir, out = Path(parquet_dir), Path(out)
    shards = sorted(parquet_dir.glob("part-*.parquet"))
    if not shards:
        raise InputError(f"no part-*.parquet in {parquet_dir}: not a Parquet demo crawl")
    if out.resolve() == parquet_dir.resolve():
        raise InputError("write the WARC files to another folder than the Parquet crawl")
    if copies < 1 or (limit is not None and limit < 1):
        raise InputError(f"copies and limit must be 1 or more, not {copies} and {limit}")
    recipe = {"version": WARC_VERSION, "from": _source_fingerprint(shards),
              "copies": copies, "limit": limit}
    built = _finished_build(out, recipe)
    if built is not None:
        return built
    stamp = out / "_BUILD.json"
    stamp.unlink(missing_ok=True)  # from here until the end the folder is unfinished
    paths, documents = [], 0
    for shard in shards:
        docs = pq.read_table(shard).to_pylist()[:limit]
        documents += len(docs)
        for crawl, group in _by_crawl(docs).items():
            for copy in range(copies):
                path = out / crawl / f"demo-{shard.stem}-c{copy}.warc.gz"
                _write_warc_file(path, group, copy, shard.name, crawl)
                paths.append(path)
    _remove_stale(out, paths)
    files = [str(p.relative_to(out)) for p in paths]
    stamp.write_text(json.dumps({"recipe": recipe, "files": files, "documents": documents,
                                 "records": documents * copies}, indent=1))
    log.info("demo crawl as WARC: %d records in %d files under %s", documents * copies,
             len(paths), out)
    return paths


def _source_fingerprint(shards: list[Path]) -> dict:
    """Names and sizes of the Parquet shards: a rebuilt crawl changes them, a moved one not."""
    return {p.name: p.stat().st_size for p in shards}


def _finished_build(out: Path, recipe: dict) -> list[Path] | None:
    """The files of an earlier build of this recipe, if it finished and they are all there."""
    try:
        stamp = json.loads((out / "_BUILD.json").read_text())
    except (OSError, ValueError):
        return None
    paths = [out / name for name in stamp.get("files", [])]
    if stamp.get("recipe") == recipe and all(p.exists() for p in paths):
        return paths
    return None


def _by_crawl(docs: list[dict]) -> dict[str, list[dict]]:
    """Documents by crawl, each under a name safe for a folder."""
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        name = re.sub(r"[^\w.-]+", "_", str(doc.get("crawl") or CRAWL)).strip("._") or CRAWL
        groups.setdefault(name, []).append(doc)
    return groups


def _remove_stale(out: Path, keep: list[Path]) -> None:
    """Files of an earlier build that this one did not write (more copies, say), so an
    import of the folder reads this build only."""
    for path in [*out.glob("*/demo-part-*-c*.warc.gz"), *out.glob("*/demo-part-*.warc.gz.tmp")]:
        if path not in keep:
            path.unlink()


def _write_warc_file(path: Path, docs: list[dict], copy: int, shard: str, crawl: str) -> None:
    """One WARC file, written under a .tmp name and renamed when complete, so a crash
    never leaves a half file that an import would take for a whole one."""
    from warcio.warcwriter import WARCWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        writer = WARCWriter(handle, gzip=True, warc_version="1.0")
        date = _warc_date(docs[0].get("date") if docs else DATE)
        writer.write_record(_warcinfo_record(writer, path.name, date, {
            "software": "thresher demo-crawl", "format": "WARC File Format 1.0",
            "isPartOf": crawl, "description": f"the thresher demo crawl, {shard}, copy {copy}"}))
        for doc in docs:
            writer.write_record(_response_record(writer, doc, copy))
    os.replace(tmp, path)


def _warcinfo_record(writer, filename: str, date: str, fields: dict):
    """warcio's own warcinfo record carries the current time and a random id; this one
    is fixed, so reruns write identical bytes."""
    body = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode()
    record_id = uuid.uuid5(_RECORD_IDS, "warcinfo/" + filename)
    headers = {"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": date,
               "WARC-Filename": filename}
    return writer.create_warc_record("", "warcinfo", payload=io.BytesIO(body), length=len(body),
                                     warc_content_type="application/warc-fields",
                                     warc_headers_dict=headers)


def _response_record(writer, doc: dict, copy: int):
    """A document as an HTTP 200 response with an HTML page, its id derived from
    (id, copy) and, for copies after the first, a URL of its own."""
    from warcio.statusandheaders import StatusAndHeaders

    body = page_html(doc.get("text") or "").encode("utf-8")
    http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                       ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
    url = doc.get("url") or f"https://demo.invalid/{doc['id']}"
    if copy:
        url += ("&" if "?" in url else "?") + f"copy={copy}"
    # The payload type as Common Crawl writes it (datatrove's WarcReader skips a record
    # whose type is not HTML, and guesses with libmagic when there is none).
    headers = {"WARC-Record-ID": f"<urn:uuid:{record_uuid(doc['id'], copy)}>",
               "WARC-Date": _warc_date(doc.get("date")),
               "WARC-Identified-Payload-Type": "text/html"}
    return writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                     http_headers=http, warc_headers_dict=headers)


def record_uuid(doc_id: str, copy: int = 0) -> str:
    """The WARC-Record-ID uuid of copy `copy` of a document (what the importer's id is)."""
    return str(uuid.uuid5(_RECORD_IDS, f"{doc_id}/{copy}"))


def _warc_date(value) -> str:
    """An ISO 8601 UTC time as WARC-Date wants it; the crawl's date when there is none."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        when = datetime.fromisoformat(DATE)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def page_html(text: str) -> str:
    """A small HTML page that trafilatura reads back as `text` (up to whitespace):
    blocks (split at blank lines) become paragraphs with <br> at line ends, inside an
    <article>. Tried and dropped: one <p> per line, which trafilatura returned empty for
    the one-line junk pages, and (without the <article>) for half the fortunes. The
    title (the first line) is not part of what trafilatura returns."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    title = html.escape(blocks[0].split("\n", 1)[0].strip()[:200]) if blocks else ""
    body = "\n".join("<p>" + "<br>".join(html.escape(line) for line in block.split("\n")) + "</p>"
                     for block in blocks)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
            f"<body><article>\n{body}\n</article></body></html>\n")
