"""The peers thresher is compared with, set up to read the same local files."""

from __future__ import annotations

from pathlib import Path


def datatrove_kenlm(lm_dir: str | Path, lang: str):
    """datatrove's KenlmModel on a local cc_net lm_dir. Its `model` and `tokenizer`
    properties download from the Hugging Face hub unless their caches are filled,
    so fill them with the local files."""
    import kenlm
    import sentencepiece
    from datatrove.utils.perplexity import KenlmModel, SentencePiece

    lm_dir = Path(lm_dir)
    model = KenlmModel(str(lm_dir), lang)
    model._model = kenlm.Model(str(lm_dir / f"{lang}.arpa.bin"))
    tokenizer = SentencePiece(str(lm_dir), lang)
    tokenizer._model = sentencepiece.SentencePieceProcessor(model_file=str(lm_dir / f"{lang}.sp.model"))
    model._tokenizer = tokenizer
    return model
