import json

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline.engine.rules import Rule
from thresher.pipeline.engine.write import decide, settle


def scored(rows):
    base = {"_count": 1, "_error": None, "_pre": None, "_t_lang": 0.01}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=pa.schema([
        ("id", pa.string()), ("text", pa.string()), ("source_row", pa.int64()),
        ("_shard", pa.string()), ("lang", pa.string()), ("lang_score", pa.float32()),
        ("_count", pa.int64()), ("_error", pa.string()), ("_pre", pa.string()),
        ("_t_lang", pa.float64())]))


RULES = [Rule.parse("lang_score >= 0.5"), Rule.parse("lang in [en, de]")]


def test_decide_takes_the_first_failing_rule_and_early_reasons_first():
    table = scored([
        {"lang": "en", "lang_score": 0.9}, {"lang": "fr", "lang_score": 0.2},
        {"lang": "fr", "lang_score": 0.9}, {"lang": None, "lang_score": None, "_pre": "empty_text"},
        {"lang": None, "lang_score": None, "_error": "text is null"}])
    assert decide(table, RULES).to_pylist() == [
        None, "lang_score<0.5", "lang not in [en,de]", "empty_text", None]


def test_settle_writes_parts_per_shard_and_tallies(tmp_path):
    table = scored([
        {"id": "1", "text": "a", "source_row": 0, "_shard": "s1", "lang": "en", "lang_score": 0.9},
        {"id": "2", "text": "b", "source_row": 1, "_shard": "s1", "lang": "fr", "lang_score": 0.9},
        {"id": "3", "text": None, "source_row": 2, "_shard": "s1", "_error": "bad", "_count": 5},
        {"id": "4", "text": "d", "source_row": 0, "_shard": "s2", "lang": "de", "lang_score": 0.8},
    ])
    tallies = {t["shard"]: t for t in settle(table, rules=RULES, out_dir=str(tmp_path),
                                            part_max_rows=10).to_pylist()}
    assert (tallies["s1"]["rows"], tallies["s1"]["curated"], tallies["s1"]["rejected"],
            tallies["s1"]["quarantined"]) == (7, 1, 1, 5)
    assert json.loads(tallies["s1"]["reasons"]) == {"lang not in [en,de]": 1}
    assert json.loads(tallies["s1"]["stage_seconds"])["lang"] > 0
    curated = pq.read_table(tmp_path / "curated" / "part-s1-0000000000.parquet")
    assert curated.column("id").to_pylist() == ["1"]
    assert not [c for c in curated.column_names if c.startswith("_") or c == "drop_reason"]
    rejected = pq.read_table(tmp_path / "rejected" / "part-s1-0000000001.parquet")
    assert rejected.column("drop_reason").to_pylist() == ["lang not in [en,de]"]
    quarantine = pq.read_table(tmp_path / "quarantine" / "part-s1-0000000002.parquet")
    assert quarantine.select(["error", "rows"]).to_pylist() == [{"error": "bad", "rows": 5}]
    assert (tmp_path / "curated" / "part-s2-0000000000.parquet").exists()
    assert not list(tmp_path.rglob(".tmp-*"))


def test_parts_are_bounded_in_rows(tmp_path):
    table = scored([{"id": str(i), "text": "t", "source_row": i, "_shard": "s", "lang": "en",
                     "lang_score": 0.9} for i in range(25)])
    settle(table, rules=RULES, out_dir=str(tmp_path), part_max_rows=10)
    sizes = sorted(pq.read_metadata(p).num_rows for p in (tmp_path / "curated").iterdir())
    assert sizes == [5, 10, 10]


def test_parts_are_bounded_in_bytes(tmp_path):
    table = scored([{"id": str(i), "text": "x" * 1000, "source_row": i, "_shard": "s",
                     "lang": "en", "lang_score": 0.9} for i in range(30)])
    settle(table, rules=RULES, out_dir=str(tmp_path), part_max_rows=100, part_max_bytes=10_000)
    parts = list((tmp_path / "curated").iterdir())
    assert len(parts) >= 3
    assert sum(pq.read_metadata(p).num_rows for p in parts) == 30


class Echo:
    """Stands in for a stage whose settle() hook makes rows (as WRAP does): a copy of
    each curated row, marked; the real rows gain a column."""

    name = "echo"

    def settle(self, rows, curated):
        made = rows.filter(curated).select(["id", "text", "source_row"])
        made = made.set_column(0, "id", pa.array([f"{i}-echo" for i in made.column("id").to_pylist()]))
        real = rows.append_column("echoed", pa.array([True] * rows.num_rows))
        return real, made, {"rows": made.num_rows}


class EchoSpec:
    params: dict = {}

    def build(self):
        return Echo()


def test_rows_a_stage_makes_are_written_apart_and_tallied_per_stage(tmp_path):
    from thresher.pipeline.engine.write import is_made_part

    table = scored([
        {"id": "1", "text": "a", "source_row": 0, "_shard": "s1", "lang": "en", "lang_score": 0.9},
        {"id": "2", "text": "b", "source_row": 1, "_shard": "s1", "lang": "fr", "lang_score": 0.9},
        {"id": "3", "text": "c", "source_row": 2, "_shard": "s1", "lang": "de", "lang_score": 0.7}])
    [tally] = settle(table, rules=RULES, out_dir=str(tmp_path), part_max_rows=10,
                     makers=(EchoSpec(),)).to_pylist()
    assert (tally["rows"], tally["curated"], tally["rejected"]) == (3, 2, 1)  # real rows only
    assert json.loads(tally["made"]) == {"echo": {"rows": 2}}
    parts = sorted(p.name for p in (tmp_path / "curated").iterdir())
    made = [p for p in parts if is_made_part(p)]
    assert len(made) == 1 and len(parts) == 2
    assert pq.read_table(tmp_path / "curated" / made[0]).column("id").to_pylist() == \
        ["1-echo", "3-echo"]
    real = pq.read_table(tmp_path / "curated" / next(p for p in parts if p not in made))
    assert real.column("echoed").to_pylist() == [True, True]
    assert json.loads(tally["files"]) == [f"curated/{p}" for p in parts if p not in made] + \
        [f"rejected/{p.name}" for p in (tmp_path / "rejected").iterdir()]
