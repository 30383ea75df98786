import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

TESTS = Path(__file__).parent
# Ray workers inherit this, so they can import the test-only stages in tests/plugins.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(TESTS / "plugins"), os.environ.get("PYTHONPATH", "")] if p)
sys.path.insert(0, str(TESTS / "plugins"))
sys.path.insert(0, str(TESTS.parent))  # for bench.peers: the peers tests compare with
# Tests live by area (engine, stages, steps, io, deploy); a few import another's
# helpers (test_tokenized takes test_mixture's outputs), also when run on their own.
for _area in ("engine", "stages", "steps", "io", "deploy"):
    sys.path.insert(0, str(TESTS / _area))
sys.path.insert(0, str(TESTS))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins = ["lm_fixtures"]  # tiny_lm_dir: small KenLMs the tests train

SENTENCES = {
    "en": "The committee published its annual report on the state of public libraries.",
    "de": "Der Ausschuss hat seinen Jahresbericht über die öffentlichen Bibliotheken veröffentlicht.",
    "fr": "Le comité a publié son rapport annuel sur l'état des bibliothèques publiques.",
    "es": "El comité publicó su informe anual sobre el estado de las bibliotecas públicas.",
}


def write_shard(path: Path, rows: list[dict] | pa.Table, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    pq.write_table(table, path, **kwargs)
    return path


def good_rows(n: int, prefix: str = "doc") -> list[dict]:
    langs = list(SENTENCES)
    return [{"id": f"{prefix}-{i}", "text": f"{SENTENCES[langs[i % 4]]} ({i})",
             "url": f"https://example.invalid/{prefix}/{i}"} for i in range(n)]


LANG_ONLY = "stages:\n  - stage: lang\nfilters: ['lang_score >= 0.5']\n"


@pytest.fixture(scope="session")
def lang_only_config(tmp_path_factory) -> Path:
    """The engine tests' pipeline: language ID only, so they test the engine alone."""
    path = tmp_path_factory.mktemp("config") / "lang.yaml"
    path.write_text(LANG_ONLY)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One in-process Ray for the whole session, as the embedded default uses."""
    from thresher.pipeline.engine import dag

    dag.connect(num_cpus=2)
    yield
    import ray

    ray.shutdown()
