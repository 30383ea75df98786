"""The demo crawl takes each source from its own package's files only, and can be
written out as WARC files that `thresher import` reads back as the same documents."""

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator

from thresher.pipeline.engine.shards import InputError
from thresher.pipeline.io import demo_crawl
from thresher.pipeline.io.demo_crawl import fortunes, page_html, record_uuid, write_warc
from thresher.pipeline.io.importers import import_files

THRESHER = str(Path(sys.executable).with_name("thresher"))
CRAWL = demo_crawl.REPO_CRAWL
SHARDS = sorted(CRAWL.glob("part-*.parquet"))
needs_crawl = pytest.mark.skipif(not SHARDS, reason="no Parquet demo crawl (`make` builds it)")


def test_fortunes_from_other_packages_in_the_same_folder_are_left_out(tmp_path):
    root = tmp_path / "fortunes"
    (root / "de").mkdir(parents=True)
    (root / "computers").write_text("An English fortune.\n%\nAnother one.\n")
    (root / "italia").write_text("Una fortuna italiana.\n%\n")  # as fortunes-it links it
    (root / "de" / "wein").write_text("Ein deutscher Spruch.\n")
    listed = {"fortunes": [str(root), str(root / "computers")],
              "fortunes-de": [str(root / "de"), str(root / "de" / "wein")]}
    rows = list(fortunes(str(root), lister=lambda package: listed.get(package, [])))
    assert sorted((r["source"], r["text"]) for r in rows) == [
        ("fortunes-de", "Ein deutscher Spruch."), ("fortunes-en", "An English fortune."),
        ("fortunes-en", "Another one.")]


def source_docs(limit: int) -> list[dict]:
    return [d for shard in SHARDS for d in pq.read_table(shard).to_pylist()[:limit]]


def records(path: Path) -> list:
    with open(path, "rb") as handle:
        return [(r.rec_type, r.rec_headers, r.http_headers) for r in ArchiveIterator(handle)]


def normalized(text: str | None) -> str:
    return " ".join((text or "").split())


@needs_crawl
def test_warc_files_are_valid_and_copies_have_their_own_urls_and_ids(tmp_path):
    paths = write_warc(CRAWL, tmp_path / "warc", copies=2, limit=4)
    assert len(paths) == 2 * len(SHARDS)
    assert {p.parent.name for p in paths} == {"demo-2026-11"}  # the importer's crawl name
    responses = []
    for path in paths:
        found = records(path)
        assert [kind for kind, _, _ in found] == ["warcinfo"] + ["response"] * 4
        for _, warc, http in found[1:]:
            assert http.get_statuscode() == "200"
            assert http.get_header("Content-Type") == "text/html; charset=utf-8"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", warc.get_header("WARC-Date"))
            responses.append((path.name, warc.get_header("WARC-Record-ID"),
                              warc.get_header("WARC-Target-URI")))
    ids, urls = {r[1] for r in responses}, {r[2] for r in responses}
    assert len(responses) == len(ids) == len(urls) == 2 * 4 * len(SHARDS)
    docs = source_docs(4)
    assert ids == {f"<urn:uuid:{record_uuid(d['id'], c)}>" for d in docs for c in (0, 1)}
    assert {u for name, _, u in responses if name.endswith("-c1.warc.gz")} == {
        d["url"] + "?copy=1" for d in docs}


@needs_crawl
def test_a_rebuild_writes_the_same_bytes_and_a_finished_build_is_reused(tmp_path):
    first = write_warc(CRAWL, tmp_path / "a", copies=2, limit=3)
    second = write_warc(CRAWL, tmp_path / "b", copies=2, limit=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    stamps = [p.stat().st_mtime_ns for p in first]
    assert write_warc(CRAWL, tmp_path / "a", copies=2, limit=3) == first
    assert [p.stat().st_mtime_ns for p in first] == stamps  # reused, not rewritten
    fewer = write_warc(CRAWL, tmp_path / "a", copies=1, limit=3)
    assert sorted((tmp_path / "a").glob("*/*.warc.gz")) == sorted(fewer)  # no stale copy 1
    assert not list((tmp_path / "a").glob("**/*.tmp"))


def test_the_page_is_read_back_as_the_text():
    from datatrove.pipeline.extractors import Trafilatura

    text = ("Vectors & <matrices>\nare \"linear\" objects.\n\nA second block,\n"
            "on two lines.\n\n\nAnd a third after two blank lines.")
    page = page_html(text)
    assert "<title>Vectors &amp; &lt;matrices&gt;</title>" in page
    extracted = Trafilatura(timeout=5).extract(page)
    assert extracted.split("\n") == [
        "Vectors & <matrices>", 'are "linear" objects.', "A second block,", "on two lines.",
        "And a third after two blank lines."]


@needs_crawl
def test_the_importer_gives_back_ids_urls_dates_and_text(tmp_path):
    paths = write_warc(CRAWL, tmp_path / "warc", copies=2, limit=6)
    first_shard = [str(p) for p in paths if "part-00000-" in p.name]
    summary = import_files("warc", first_shard, str(tmp_path / "shards"), workers=1)
    assert summary["errors"] == [] and summary["rows"] == 12, summary
    rows = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "shards").glob("*.parquet"))
    first_docs = pq.read_table(SHARDS[0]).to_pylist()[:6]
    docs = {record_uuid(d["id"], c): (d, c) for d in first_docs for c in (0, 1)}
    assert sorted(rows["id"].to_pylist()) == sorted(docs)
    same = 0
    for row in rows.to_pylist():
        doc, copy = docs[row["id"]]
        assert row["url"] == doc["url"] + (f"?copy={copy}" if copy else "")
        assert row["date"] == "2026-11-01T00:00:00Z" and row["crawl"] == "demo-2026-11"
        assert row["text"], row
        same += normalized(row["text"]) == normalized(doc["text"])
    assert same >= 0.9 * len(docs)


@needs_crawl
def test_the_command_writes_warc_as_the_docs_say_and_refuses_bad_arguments(tmp_path):
    out = tmp_path / "demo-warc"
    done = subprocess.run([THRESHER, "demo-crawl", "--format", "warc", "--copies", "2",
                           "--docs-per-shard", "2", "--output", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    files = len(SHARDS) * 2
    assert (f"{files} files, {files * 2} response records (2 x {len(SHARDS) * 2} documents) "
            f"in {out / 'demo-2026-11'}") in done.stdout
    assert len(list(out.glob("demo-2026-11/*.warc.gz"))) == files
    for bad in (["--format", "warc", "--copies", "0"], ["--copies", "2"]):
        refused = subprocess.run([THRESHER, "demo-crawl", "--output", str(tmp_path / "x"), *bad],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        assert refused.stderr.startswith("thresher: error: ") and refused.stderr.count("\n") == 1


def test_a_folder_that_is_not_a_demo_crawl_is_not_built_over(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(demo_crawl, "build_demo_crawl",
                        lambda folder, shards, seed: built.append(folder) or [])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a demo crawl folder"):
        demo_crawl.ensure_demo_crawl(tmp_path / "mine")
    demo_crawl.ensure_demo_crawl(tmp_path / "new")
    assert built == [tmp_path / "new"]
    with pytest.raises(InputError, match="no part-"):
        write_warc(tmp_path / "mine", tmp_path / "warc")
