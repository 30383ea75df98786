"""The url stage: user-supplied block lists of domains and URL substrings."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.pipeline.engine.config import ConfigError, parse_config
from thresher.stages.url import URLBlocklist


@pytest.fixture
def lists(tmp_path):
    domains = tmp_path / "domains"
    domains.write_text("# UT1-style: one domain a line\nexample.com\n.Casino.example.org\n\n")
    words = tmp_path / "url-words.txt"
    words.write_text("viagra\n/adult/  # trailing comment\n")
    return domains, words


def test_domains_block_themselves_and_subdomains_only(lists):
    stage = URLBlocklist(domain_lists=str(lists[0]))
    assert stage.blocked_by("https://example.com/a") == "domain:example.com"
    assert stage.blocked_by("http://www.EXAMPLE.com:8080/x") == "domain:example.com"
    assert stage.blocked_by("https://badexample.com/") is None
    assert stage.blocked_by("https://example.com.evil.net/") is None
    assert stage.blocked_by("https://a.casino.example.org/") == "domain:casino.example.org"
    assert stage.blocked_by("https://example.org/") is None


def test_substrings_match_anywhere_case_aside(lists):
    stage = URLBlocklist(substring_lists=[str(lists[1])], substrings=["Free-Money"])
    assert stage.blocked_by("https://shop.net/buy-VIAGRA-now") == "substring:viagra"
    assert stage.blocked_by("https://x.net/adult/page") == "substring:/adult/"
    assert stage.blocked_by("https://x.net/free-money") == "substring:free-money"
    assert stage.blocked_by("https://x.net/adults") is None


def test_columns_and_nulls(lists):
    stage = URLBlocklist(domain_lists=[str(lists[0])], domains=["spam.invalid"])
    out = stage(pa.table({"text": ["a", "b", "c", "d"],
                          "url": ["https://spam.invalid/1", None, "https://ok.net/", "not a url"]}))
    assert out.column("url_blocked").to_pylist() == [True, None, False, False]
    assert out.column("url_blocked_reason").to_pylist() == ["domain:spam.invalid", None, None, None]
    no_urls = stage(pa.table({"text": ["a"]}))
    assert no_urls.column("url_blocked").to_pylist() == [None]


def test_a_missing_list_is_a_clear_config_error(tmp_path):
    missing = tmp_path / "nowhere" / "domains"
    with pytest.raises(ConfigError, match=f"domain_lists file '{missing}' does not exist"):
        parse_config({"stages": [{"stage": "url", "domain_lists": [str(missing)]}]}, "test")
    with pytest.raises(ConfigError, match="is not a file"):
        parse_config({"stages": [{"stage": "url", "substring_lists": str(tmp_path)}]}, "test")
    with pytest.raises(ConfigError, match="no block list entries"):
        parse_config({"stages": [{"stage": "url"}]}, "test")


def test_blocked_rows_get_the_entry_as_drop_reason(lists):
    from thresher.pipeline.engine.rules import Rule
    from thresher.pipeline.engine.write import decide

    table = URLBlocklist(domain_lists=str(lists[0]))(
        pa.table({"text": ["a", "b"], "url": ["https://www.example.com/", "https://ok.net/"]}))
    nulls = pa.nulls(2, pa.string())
    table = table.append_column("_pre", nulls).append_column("_error", nulls)
    assert decide(table, [Rule.parse("url_blocked != true")]).to_pylist() == [
        "url_blocked=true:domain:example.com", None]


def test_the_datatrove_engine_is_datatroves_url_filter_on_every_demo_url():
    """engine: datatrove gives datatrove's URLFilter verdict and reason for each URL, with
    its shipped lists (tldextract's bundled suffix list on both sides)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    demo = sorted((Path(__file__).resolve().parents[2] / "data" / "demo-crawl").glob("*.parquet"))
    urls = pq.read_table(demo[0], columns=["url"]).column("url").to_pylist()[:300]
    urls += ["https://www.pornhub.com/x", "http://a.b.xxx/", "https://casino-sex-girls.com/",
             "https://example.org/free-porn/video", "https://news.example.com/a?b=c"]
    stage = URLBlocklist(engine="datatrove", domains=["news.example.com"]).ready()
    out = stage(pa.table({"url": urls}))
    peer = URLFilter(extra_domains=["news.example.com"])
    peer.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    expected = []
    for url in urls:
        verdict = peer.filter(Document(text="", id="", metadata={"url": url}))
        expected.append(None if verdict is True else f"datatrove:{verdict[1]}")
    assert out.column("url_blocked_reason").to_pylist() == expected
    assert out.column("url_blocked").to_pylist() == [e is not None for e in expected]
    assert expected[-5:] == ["datatrove:domain", "datatrove:hard_blacklisted", None,
                             "datatrove:hard_blacklisted", "datatrove:subdomain"]


def test_an_unknown_engine_is_a_config_error():
    with pytest.raises(ValueError, match="engine must be one of thresher, datatrove"):
        URLBlocklist(engine="ut1", domains=["a.com"])
