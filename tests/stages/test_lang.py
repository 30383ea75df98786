import pyarrow as pa
import pytest

from conftest import SENTENCES
from thresher.models.registry import ModelNotFound, resolve
from thresher.stages.lang import LanguageID


def test_lid176_from_the_wheel_identifies_languages():
    stage = LanguageID()
    stage.setup()
    texts = list(SENTENCES.values()) + ["first line of English\nand the second line of it"]
    out = stage(pa.table({"text": texts}))
    assert out.column("lang").to_pylist() == ["en", "de", "fr", "es", "en"]
    assert all(0.5 < s <= 1.0 for s in out.column("lang_score").to_pylist())


def test_a_model_path_that_is_not_fasttext_fails_at_setup(tmp_path):
    bogus = tmp_path / "lid.bin"
    bogus.write_bytes(b"not a model")
    stage = LanguageID(model=str(bogus))
    with pytest.raises(ValueError, match="not a fastText model"):
        stage.setup()


def test_unknown_model_name():
    with pytest.raises(ModelNotFound, match="lid176"):
        resolve("lid999")
