"""The demo crawl takes each source from its own package's files only."""

from thresher.pipeline.io.demo_crawl import fortunes


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
