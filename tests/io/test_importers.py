"""`thresher import`: WARC files written here with warcio from local HTML pages, WET
and JSONL(.gz), to input shards that `thresher curate` takes as they are."""

import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import LANG_ONLY
from e2e_helpers import assert_each_row_once
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from thresher.pipeline.engine.config import load_config
from thresher.pipeline.io.importers import import_files
from thresher.pipeline.engine.run import curate

THRESHER = str(Path(sys.executable).with_name("thresher"))

ARTICLE = ("The river authority opened the new flood barrier on Tuesday after four years "
           "of construction. Engineers said the gates can close within twelve minutes when "
           "the water rises, protecting about nine thousand homes downstream. ")

EMPTY_PAGE = "<html><head><title>t</title></head><body><script>load()</script></body></html>"


def page(title: str, paragraphs: int) -> str:
    body = "".join(f"<p>{ARTICLE}Paragraph {i} of the report on {title}.</p>"
                   for i in range(paragraphs))
    return (f"<html><head><title>{title}</title></head><body>"
            f"<nav><a href='/'>Home</a> | <a href='/news'>News</a> | Subscribe now</nav>"
            f"<article><h1>{title}</h1>{body}</article>"
            f"<footer>Copyright footer text</footer></body></html>")


def write_warc(path: Path, pages: dict[str, str], extra_png: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        for url, html in pages.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                url, "response", payload=io.BytesIO(html.encode("utf-8")), http_headers=http))
            writer.write_record(writer.create_warc_record(
                url, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
        if extra_png:
            http = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                "https://example.invalid/logo.png", "response",
                payload=io.BytesIO(b"\x89PNG\r\n\x1a\nnot really"), http_headers=http))
    return path


def write_wet(path: Path, texts: dict[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, text in texts.items():
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(text.encode("utf-8")),
                warc_headers_dict={"Content-Type": "text/plain"}))
    return path


def read_rows(folder: Path) -> list[dict]:
    return [row for part in sorted(folder.glob("*.parquet"))
            for row in pq.read_table(part).to_pylist()]


def test_warc_pages_become_main_text_rows_and_non_documents_are_counted(tmp_path):
    crawl = tmp_path / "CC-MAIN-2026-47" / "segments"
    pages = {f"https://news.example.invalid/story-{i}": page(f"Story {i}", 6) for i in range(3)}
    pages["https://news.example.invalid/empty"] = EMPTY_PAGE
    write_warc(crawl / "a.warc.gz", pages)
    out = tmp_path / "shards"
    summary = import_files("warc", [str(tmp_path)], str(out), workers=1)
    assert summary["files"] == summary["imported"] == 1 and not summary["errors"]
    assert summary["skipped"] == {"request record": 4, "warcinfo record": 1,
                                  "not HTML (image/png)": 1}
    rows = {r["url"]: r for r in read_rows(out)}
    assert len(rows) == 4
    story = rows["https://news.example.invalid/story-1"]
    assert "flood barrier" in story["text"] and "Paragraph 5 of the report on Story 1" in story["text"]
    assert "Subscribe now" not in story["text"] and "Copyright footer" not in story["text"]
    assert story["crawl"] == "CC-MAIN-2026-47" and story["date"].startswith("20")
    assert story["id"] and story["import_note"] is None
    assert rows["https://news.example.invalid/empty"]["text"] == ""
    assert rows["https://news.example.invalid/empty"]["import_note"] == "no main text found"


def test_wet_and_jsonl_import_keep_every_line(tmp_path):
    write_wet(tmp_path / "wet" / "b.warc.wet.gz",
              {"https://a.invalid/1": "First plain text page.", "https://a.invalid/2": "Second."})
    summary = import_files("wet", [str(tmp_path / "wet")], str(tmp_path / "wet-out"),
                           crawl="my-crawl", workers=1)
    rows = read_rows(tmp_path / "wet-out")
    assert summary["rows"] == 2 and [r["text"] for r in rows] == ["First plain text page.", "Second."]
    assert {r["crawl"] for r in rows} == {"my-crawl"}

    lines = [json.dumps({"id": "x1", "text": "Hello there.", "url": "https://b.invalid/",
                         "date": "2026-11-01", "lang_hint": "en"}),
             "{not json", json.dumps({"id": "x3", "body": "no text field"}), "",
             json.dumps({"text": "No id given."})]
    (tmp_path / "j").mkdir()
    with gzip.open(tmp_path / "j" / "c.jsonl.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    summary = import_files("jsonl", [str(tmp_path / "j" / "*.jsonl.gz")], str(tmp_path / "j-out"),
                           workers=1)
    rows = read_rows(tmp_path / "j-out")
    assert summary["rows"] == 4 and len(rows) == 4  # the blank line is not a record
    assert rows[0]["text"] == "Hello there." and rows[0]["date"] == "2026-11-01"
    assert rows[1]["text"] is None and "line 2 is not a JSON object" in rows[1]["import_note"]
    assert rows[2]["text"] is None and rows[2]["import_note"] == "no string `text` field"
    assert rows[3]["id"] is None and rows[3]["text"] == "No id given."


def test_import_is_resumable_and_redoes_only_changed_files(tmp_path):
    raw = tmp_path / "raw"
    first = write_warc(raw / "one.warc.gz", {"https://c.invalid/1": page("One", 4)})
    write_warc(raw / "two.warc.gz", {"https://c.invalid/2": page("Two", 4)})
    out = tmp_path / "shards"
    assert import_files("warc", [str(raw)], str(out), workers=2)["imported"] == 2
    again = import_files("warc", [str(raw)], str(out), workers=2)
    assert again["imported"] == 0 and again["already_done"] == 2
    write_warc(first, {"https://c.invalid/1": page("One", 4), "https://c.invalid/3": page("Three", 4)})
    changed = import_files("warc", [str(raw)], str(out), workers=2)
    assert changed["imported"] == 1 and changed["already_done"] == 1
    assert sorted(r["url"] for r in read_rows(out)) == [
        "https://c.invalid/1", "https://c.invalid/2", "https://c.invalid/3"]  # no duplicates
    # The import's own state is not among the shards: the folder reads as a dataset.
    assert pq.read_table(out).num_rows == 3
    assert not list(out.glob("*.sqlite*"))


def test_a_truncated_warc_keeps_the_rows_before_the_damage(tmp_path):
    pages = {f"https://d.invalid/{i}": page(f"Doc {i}", 4) for i in range(4)}
    path = write_warc(tmp_path / "raw" / "cut.warc.gz", pages, extra_png=False)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # the file ends inside a gzip member
    summary = import_files("warc", [str(path)], str(tmp_path / "out1"), workers=1)
    assert 1 <= summary["rows"] < 4 and "truncated" in summary["errors"][0], summary
    path.write_bytes(data[: int(len(data) * 0.95)])  # inside the last record's headers
    summary = import_files("warc", [str(path)], str(tmp_path / "out2"), workers=1)
    assert summary["rows"] == 4 and summary["errors"], summary


@pytest.mark.usefixtures("ray_cluster")
def test_imported_shards_curate_with_every_row_accounted(tmp_path):
    pages = {f"https://e.invalid/{i}": page(f"Report {i}", 5) for i in range(5)}
    pages["https://e.invalid/nav-only"] = EMPTY_PAGE
    write_warc(tmp_path / "raw" / "e.warc.gz", pages)
    done = subprocess.run([THRESHER, "import", "-f", "warc", "-i", str(tmp_path / "raw"),
                           "-o", str(tmp_path / "shards"), "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "6 rows" in done.stdout and "1 no main text found" in done.stdout
    config = tmp_path / "lang.yaml"
    config.write_text(LANG_ONLY)
    result = curate([str(tmp_path / "shards")], tmp_path / "out", load_config(config),
                    progress=False)
    assert result.totals["rows_in"] == 6 and result.totals["curated"] == 5
    assert result.totals["rejected"] == 1  # the page without main text: empty_text
    assert_each_row_once(tmp_path / "out", sorted((tmp_path / "shards").glob("*.parquet")))


@pytest.mark.usefixtures("ray_cluster")
def test_import_on_ray_tasks_matches_the_local_processes(tmp_path):
    raw = tmp_path / "raw"
    for name in ("one", "two", "three"):
        write_warc(raw / f"{name}.warc.gz", {f"https://f.invalid/{name}/{i}": page(name, 3)
                                             for i in range(2)})
    local = import_files("warc", [str(raw)], str(tmp_path / "local"), workers=2)
    on_ray = import_files("warc", [str(raw)], str(tmp_path / "ray"), address="auto")
    assert on_ray["imported"] == local["imported"] == 3 and on_ray["rows"] == local["rows"] == 6
    assert sorted(r["text"] for r in read_rows(tmp_path / "ray")) == \
        sorted(r["text"] for r in read_rows(tmp_path / "local"))
