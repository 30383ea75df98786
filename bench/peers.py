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


def bare_generate(tokenizer, model, prompts: list[str], max_new_tokens: int,
                  sample: dict | None = None, batch: int = 8) -> tuple[int, float]:
    """The peer of thresher's LLM calls: transformers `generate` on already templated
    prompts, in batches in input order; (new tokens, seconds). `sample`: sampling
    settings (temperature, top_p), or None for greedy."""
    import time

    import torch

    tokens = 0
    started = time.perf_counter()
    for s in range(0, len(prompts), batch):
        enc = tokenizer(prompts[s:s + batch], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        options = {"do_sample": True, "top_k": None, **sample} if sample else {"do_sample": False}
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, **options)
        tokens += int((out[:, enc["input_ids"].shape[1]:] != tokenizer.pad_token_id).sum())
    return tokens, time.perf_counter() - started


def datatrove_lid176(threshold: float = 0.5, languages: list[str] | None = None):
    """datatrove's LanguageFilter on the local lid.176.ftz: its model property would
    download lid.176.bin from the web, so the model is filled in, in the worker (a
    loaded fastText model cannot be pickled to datatrove's workers)."""
    from datatrove.pipeline.filters import LanguageFilter

    class LocalLanguageFilter(LanguageFilter):
        def filter(self, doc) -> bool:
            if self.model._model is None:
                from fasttext.FastText import _FastText

                from thresher.models.registry import resolve

                self.model._model = _FastText(str(resolve("lid176")))
            return super().filter(doc)

    return LocalLanguageFilter(languages=languages, language_threshold=threshold)


def _ccnet_tail_filter():
    from datatrove.pipeline.filters.base_filter import BaseFilter

    class DatatroveCCNetTail(BaseFilter):
        """datatrove's KenlmModel on a local cc_net lm_dir, dropping a language's tail
        (perplexity at or above its cut-off); languages without a model pass."""

        name = "ccnet tail (KenlmModel)"

        def __init__(self, lm_dir: str, cutoffs: dict):
            super().__init__()
            self.lm_dir, self.cutoffs = str(lm_dir), cutoffs
            self._models = None

        def filter(self, doc) -> bool:
            if self._models is None:  # in the worker, not pickled with the pipeline
                from thresher.models.kenlm_lm import lm_dir_languages

                self._models = {lang: datatrove_kenlm(self.lm_dir, lang)
                                for lang in lm_dir_languages(Path(self.lm_dir))}
            lang = doc.metadata.get("language")
            if lang not in self._models or lang not in self.cutoffs:
                return True
            return self._models[lang].get_perplexity(doc.text) < self.cutoffs[lang][1]

    return DatatroveCCNetTail


def __getattr__(name):
    if name == "DatatroveCCNetTail":  # built on first use: datatrove is a bench-only import
        return _ccnet_tail_filter()
    raise AttributeError(name)
