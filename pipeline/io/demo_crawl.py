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
"""

from __future__ import annotations

import bz2
import codecs
import glob
import hashlib
import json
import logging
import os
import subprocess
import random
import shutil
import sysconfig
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
