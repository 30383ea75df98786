"""URL block lists (`url`): documents whose URL is on a list the user supplies.

A domain blocks itself and every subdomain (`example.com` blocks `www.example.com`,
not `badexample.com`); a substring blocks every URL that contains it, case aside.
Lists are files of one entry per line (`#` starts a comment; the `domains` and
`urls` files of the UT1 blacklists that FineWeb used read as they are), or entries
written in the config. Columns: `url_blocked` and `url_blocked_reason`
(`domain:example.com` or `substring:casino`), so that the drop reason says which
entry matched. The stage is a gate: a blocked document gets no later stage's time.

`engine: datatrove` runs datatrove's own `URLFilter` object instead, as FineWeb did:
its shipped lists (the UT1 adult domains and URLs, banned words, banned subwords, soft
banned words with `soft_word_threshold`) unless `use_integrated_lists: false`, and this
stage's domains as its `extra_domains`, substrings as its `banned_subwords`, in its
own semantics (a domain entry matches the registered domain or the full host). The
reason is datatrove's (`datatrove:domain`, `datatrove:soft_blacklisted`, ...). Its
suffix list is tldextract's bundled snapshot: nothing is fetched.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

from thresher.stages.base import Resources, Stage


ENGINES = ("thresher", "datatrove")


class URLBlocklist(Stage):
    name = "url"
    columns = {"url_blocked": pa.bool_(), "url_blocked_reason": pa.string()}
    gate = True
    default_resources = Resources(batch_size=2048)

    def __init__(self, domain_lists: list[str] | str = (), substring_lists: list[str] | str = (),
                 domains: list[str] = (), substrings: list[str] = (), column: str = "url",
                 engine: str = "thresher", use_integrated_lists: bool = True,
                 soft_word_threshold: int = 2, resources: Resources | None = None):
        super().__init__(resources)
        if engine not in ENGINES:
            raise ValueError(f"url: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine, self.use_integrated_lists = engine, use_integrated_lists
        self.soft_word_threshold = soft_word_threshold
        self.files = [Path(p).expanduser()
                      for p in _as_list(domain_lists) + _as_list(substring_lists)]
        self.domains = {_domain(d) for d in _as_list(domains) + _read(domain_lists, "domain_lists")}
        self.domains.discard("")
        self.substrings = sorted({s.lower() for s in _as_list(substrings)
                                  + _read(substring_lists, "substring_lists") if s},
                                 key=lambda s: (-len(s), s))
        self._datatrove = None
        if not self.domains and not self.substrings and not (
                engine == "datatrove" and use_integrated_lists):
            raise ValueError("url: no block list entries; give domain_lists / substring_lists "
                             "(files) or domains / substrings, or leave the stage out")
        self.column = column
        self.reads = (column,)  # when present: rows without it pass
        # one alternation: re's search is far faster than a loop over the entries
        self._substring = re.compile("|".join(map(re.escape, self.substrings))) \
            if self.substrings else None

    def model_files(self) -> list[Path]:
        return self.files

    def memory_estimate(self) -> int:
        """The lists as a set and a compiled alternation: a few times their text."""
        text = sum(map(len, self.domains)) + sum(map(len, self.substrings))
        if self.engine == "datatrove" and self.use_integrated_lists:
            return 900 * 2**20 + 8 * text  # datatrove's UT1 lists as Python sets: measured
        return 4 * 2**20 + 8 * text

    def describe(self) -> dict:
        return {"domains": len(self.domains), "substrings": len(self.substrings),
                "lists": [str(p) for p in self.files], "column": self.column,
                "engine": self.engine, "use_integrated_lists": self.use_integrated_lists,
                "soft_word_threshold": self.soft_word_threshold}

    def check(self) -> None:
        pass  # the lists were read in __init__

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.column in batch.column_names:
            urls = batch.column(self.column).to_pylist()
            reasons = [self.blocked_by(url) for url in urls]
            blocked = [None if url is None else reason is not None
                       for url, reason in zip(urls, reasons)]
        else:  # no URLs to judge: nothing is blocked, nothing is claimed
            reasons = blocked = [None] * batch.num_rows
        batch = batch.append_column("url_blocked", pa.array(blocked, pa.bool_()))
        return batch.append_column("url_blocked_reason", pa.array(reasons, pa.string()))

    def blocked_by(self, url: str | None) -> str | None:
        """The entry that blocks url (`domain:...` or `substring:...`), or None."""
        if not url:
            return None
        if self.engine == "datatrove":
            return self._datatrove_verdict(url)
        host = _host(url)
        labels = host.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in self.domains:
                return f"domain:{suffix}"
        if self._substring is not None:
            match = self._substring.search(url.lower())
            if match:
                return f"substring:{match.group()}"
        return None


    def _datatrove_verdict(self, url: str) -> str | None:
        from datatrove.data import Document

        if self._datatrove is None:
            self._datatrove = self._datatrove_filter()
        verdict = self._datatrove.filter(Document(text="", id="", metadata={"url": url}))
        if verdict is True:
            return None
        return f"datatrove:{verdict[1] if isinstance(verdict, tuple) else 'blocked'}"

    def _datatrove_filter(self):
        """datatrove's URLFilter as FineWeb made it, with tldextract's bundled suffix
        list (its default fetches the list from the network on first use)."""
        import warnings

        from datatrove.pipeline.filters import URLFilter
        from tldextract import TLDExtract

        # datatrove 0.10.1 reads tldextract's `registered_domain`, deprecated (same value)
        warnings.filterwarnings("ignore", message="The 'registered_domain' property",
                                category=DeprecationWarning)

        url_filter = URLFilter(soft_word_threshold=self.soft_word_threshold,
                               extra_domains=sorted(self.domains) or None,
                               banned_subwords=self.substrings or None,
                               use_integrated_lists=self.use_integrated_lists)
        url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
        return url_filter


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _read(paths, key: str) -> list[str]:
    entries = []
    for path in map(Path, _as_list(paths)):
        path = path.expanduser()
        if not path.is_file():
            raise ValueError(f"url: {key} file {str(path)!r} does not exist" if not path.exists()
                             else f"url: {key} entry {str(path)!r} is not a file")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(line)
    return entries


def _domain(entry: str) -> str:
    """A list entry as a bare host: `https://www.Example.com/x` and `.example.com`
    are `www.example.com` and `example.com`."""
    entry = entry.strip().lower()
    if "://" in entry:
        entry = urlsplit(entry).hostname or ""
    return entry.strip(".").split("/", 1)[0]


def _host(url: str) -> str:
    try:
        host = urlsplit(url if "://" in url else f"//{url}").hostname or ""
    except ValueError:  # a malformed URL (bad IPv6 brackets): judged by substrings only
        host = ""
    return host.rstrip(".")
