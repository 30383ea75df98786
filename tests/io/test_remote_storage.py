"""Inputs and outputs as URIs: globs over a crawl layout, and a whole curation against
a real S3-compatible server (moto in server mode, over HTTP), not a mock."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import good_rows, write_shard
from e2e_helpers import assert_each_row_once, output_rows

from thresher.pipeline.io import storage
from thresher.pipeline.engine.shards import InputError, expand_inputs
from thresher.pipeline.io.storage import Store

THRESHER = str(Path(sys.executable).with_name("thresher"))


def test_glob_star_stays_in_one_segment_and_double_star_crosses(tmp_path):
    for name in ("2026-01/shards/a.parquet", "2026-02/shards/b.parquet",
                 "2026-02/shards/deep/c.parquet", "2026-02/other/d.parquet",
                 "2026-02/shards/.tmp-e.parquet"):
        write_shard(tmp_path / "crawls" / name, good_rows(2))
    one_level = expand_inputs([f"{tmp_path}/crawls/*/shards/*.parquet"])
    assert [Path(p).name for p in one_level] == ["a.parquet", "b.parquet"]
    deep = expand_inputs([f"{tmp_path}/crawls/**/*.parquet"])
    assert sorted(Path(p).name for p in deep) == ["a.parquet", "b.parquet", "c.parquet",
                                                  "d.parquet"]  # never a hidden temp file
    assert expand_inputs([f"{tmp_path}/crawls/2026-0[2]/shards/?.parquet"]) == [
        str(tmp_path / "crawls/2026-02/shards/b.parquet")]
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([f"{tmp_path}/crawls/*/nothing/*.parquet"])


def test_store_writes_lists_and_deletes_on_the_local_filesystem(tmp_path):
    store = Store.at(str(tmp_path / "out"))
    store.write_table(pa.table({"x": [1, 2]}), store.path("curated", "part-a.parquet"))
    store.write_text(store.path("curated", "note.json"), "{}")
    assert store.files("curated", "part-*.parquet") == [str(tmp_path / "out/curated/part-a.parquet")]
    assert store.num_rows(store.path("curated", "part-a.parquet")) == 2
    assert not [p for p in (tmp_path / "out/curated").iterdir() if p.name.startswith(".tmp")]
    store.delete(store.path("curated", "note.json"))
    assert store.files("curated") == [store.path("curated", "part-a.parquet")]
    assert store.files("missing") == []


def test_uris_keep_their_query_and_bucket():
    assert storage.uri_of("s3://b/x?endpoint_override=h:1", "b/y/z.parquet") == \
        "s3://b/y/z.parquet?endpoint_override=h:1"
    assert storage.uri_of("hdfs://nn:8020/data", "/data/a.parquet") == "hdfs://nn:8020/data/a.parquet"
    assert storage.has_glob("s3://b/crawls/*/a.parquet?scheme=http")
    assert not storage.has_glob("s3://b/crawls/a.parquet")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port; the environment a client needs to reach it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket="crawl-bucket")
    yield client, env
    server.stop()


def put_shard(client, key: str, rows: list[dict], scratch: Path) -> str:
    local = write_shard(scratch / key.replace("/", "_"), rows)
    client.upload_file(str(local), "crawl-bucket", key)
    return f"s3://crawl-bucket/{key}"


def thresher(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([THRESHER, *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_curate_reads_and_writes_s3_and_then_only_new_crawls(s3, tmp_path, monkeypatch,
                                                            lang_only_config):
    client, env = s3
    first = [put_shard(client, f"crawls/2026-01/shards/{n}.parquet", good_rows(12, n), tmp_path)
             for n in ("a", "b")]
    put_shard(client, "crawls/2026-01/notes/skip.parquet", good_rows(3, "skip"), tmp_path)
    pattern = "s3://crawl-bucket/crawls/*/shards/*.parquet"
    out, state = "s3://crawl-bucket/curated-out", tmp_path / "state"
    run = ["curate", "-i", pattern, "-o", out, "--state", str(state), "-c",
           str(lang_only_config), "--num-cpus", "2", "--no-progress"]

    planned = thresher(env, "plan", "-i", pattern, "-o", out, "--state", str(state), "--json")
    assert [json.loads(line)["action"] for line in planned.stdout.splitlines()] == ["new", "new"]
    first_run = thresher(env, *run)
    assert "24 rows in" in first_run.stdout, first_run.stdout

    new = put_shard(client, "crawls/2026-02/shards/c.parquet", good_rows(5, "c"), tmp_path)
    planned = thresher(env, "plan", "-i", pattern, "-o", out, "--state", str(state), "--json")
    actions = {json.loads(line)["path"]: json.loads(line)["action"]
               for line in planned.stdout.splitlines()}
    assert actions == {first[0]: "done", first[1]: "done", new: "new"}
    second_run = thresher(env, *run)
    assert "5 rows in" in second_run.stdout and "1 shards new, 2 shards done" in second_run.stdout

    for name, value in env.items():  # read the outputs back from the server
        monkeypatch.setenv(name, value)
    storage._filesystem.cache_clear()
    try:
        assert_each_row_once(out, [*first, new])
        assert sum(output_rows(out)["curated"].values()) > 0
        assert (state / "ledger.sqlite").exists()  # the ledger stays with the driver
        runs = Store.at(out).fs.get_file_info(
            storage.resolve(out)[1] + "/runs/")  # the manifests are copied next to the outputs
        assert runs.type.name == "Directory"
    finally:
        storage._filesystem.cache_clear()
    status = thresher(env, "status", "-o", out, "--state", str(state))
    assert "3 shards known: 3 done" in status.stdout


def test_an_unreachable_bucket_is_a_clear_input_error(s3, tmp_path):
    _, env = s3
    done = subprocess.run([THRESHER, "plan", "-i", "s3://no-such-bucket/x/*.parquet", "-o",
                           str(tmp_path / "out")], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no-such-bucket" in done.stderr and "Traceback" not in done.stderr


def test_an_output_that_cannot_be_written_fails_before_any_work(s3, tmp_path, lang_only_config):
    _, env = s3
    write_shard(tmp_path / "crawl" / "a.parquet", good_rows(3))
    done = subprocess.run([THRESHER, "curate", "-i", str(tmp_path / "crawl"), "-o",
                           "s3://no-such-bucket/out", "--state", str(tmp_path / "state"),
                           "-c", str(lang_only_config)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "cannot write to the output s3://no-such-bucket/out" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "state").exists()


def test_import_reads_and_writes_s3(s3, tmp_path):
    client, env = s3
    lines = "\n".join(json.dumps({"id": f"j{i}", "text": f"Document number {i}."})
                      for i in range(5)) + "\n"
    client.put_object(Bucket="crawl-bucket", Key="raw/2026-03/a.jsonl", Body=lines.encode())
    client.put_object(Bucket="crawl-bucket", Key="raw/2026-03/notes.txt", Body=b"not jsonl")
    out = "s3://crawl-bucket/imported/2026-03/shards"
    args = ["import", "-f", "jsonl", "-i", "s3://crawl-bucket/raw/", "-o", out,
            "--state", str(tmp_path / "state"), "--workers", "1"]
    first = thresher(env, *args)
    assert "imported 1 of 1 jsonl files" in first.stdout and "5 rows" in first.stdout
    again = thresher(env, *args)
    assert "imported 0 of 1 jsonl files (1 already done)" in again.stdout
    listed = client.list_objects_v2(Bucket="crawl-bucket", Prefix="imported/2026-03/shards/")
    [key] = [o["Key"] for o in listed["Contents"]]
    body = client.get_object(Bucket="crawl-bucket", Key=key)["Body"].read()
    table = pq.read_table(pa.BufferReader(body))
    assert table.column("text").to_pylist()[0] == "Document number 0."
    assert set(table.column("crawl").to_pylist()) == {"2026-03"}  # the file's folder
