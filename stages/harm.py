"""Harmful-content filtering by perplexity (Jansen et al. 2022, "Perplexed by
Quality"; DESIGN.md 4, `harm`).

A KenLM trained only on harmful/adult text scores each document whole, newlines as
spaces, no SentencePiece (OSCAR's production variant). A document whose perplexity is
*below* tau looks like the harmful corpus: `harm_flag` is true and the default filter
drops it. With `rule: xent`, the cross-entropy difference log(harmful ppl) -
log(reference ppl) is compared with its own tau instead: it corrects for how hard a
text is in general. The default, `rule: auto`, takes per language the rule that
fit-tau found better on labelled validation text (the card's `best`), when a
reference LM exists; else the paper's perplexity rule.

Each language needs `<lang>.arpa.bin` in `models`; tau comes from the config, or from
`<lang>.tau.json` written by `thresher models fit-tau` next to the model, or (when
neither exists) is placed in the valley of a sample's log-perplexities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa

from thresher.models.harm_tau import card_path, valley_tau
from thresher.models.kenlm_lm import WordLM
from thresher.models.registry import resolve, resolve_dir
from thresher.stages.base import Resources, Stage

RULES = ("ppl", "xent")
AUTO = "auto"


class HarmfulPerplexity(Stage):
    name = "harm"
    columns = {"harm_ppl": pa.float32(), "harm_xent": pa.float32(), "harm_flag": pa.bool_()}
    default_resources = Resources(batch_size=256)
    reads = ("lang",)  # the language picks the model
    calibration_columns = ("lang", "harm_ppl", "harm_xent")

    def __init__(self, models: str | dict = "harm-default", rule: str = AUTO,
                 tau: float | dict | None = None, calibration_rows: int = 5000,
                 resources: Resources | None = None):
        super().__init__(resources)
        if rule not in (*RULES, AUTO):
            raise ValueError(f"rule must be one of {(*RULES, AUTO)}, got {rule!r}")
        self.rule = rule
        self.calibration_rows = calibration_rows
        if isinstance(models, dict):  # {lang: file}: OSCAR's binaries under their own names
            self.languages = {lang: resolve(path) for lang, path in models.items()}
            self.models_dir = self.languages[next(iter(self.languages))].parent
        else:
            self.models_dir = resolve_dir(models)
            self.languages = {p.name[: -len(".arpa.bin")]: p
                              for p in sorted(self.models_dir.glob("*.arpa.bin"))
                              if not p.name.endswith(".ref.arpa.bin")}
        if not self.languages:
            raise ValueError(f"{self.models_dir} holds no <lang>.arpa.bin harmful model")
        self.references = {lang: self.models_dir / f"{lang}.ref.arpa.bin" for lang in self.languages
                           if (self.models_dir / f"{lang}.ref.arpa.bin").is_file()}
        if rule == "xent" and set(self.references) != set(self.languages):
            missing = sorted(set(self.languages) - set(self.references))
            raise ValueError(f"rule xent needs a reference LM <lang>.ref.arpa.bin for {missing}")
        self.rules = {lang: self._rule_for(lang) for lang in self.languages}
        self.tau = self._taus(tau)
        self._lms: dict[str, WordLM] = {}
        self._refs: dict[str, WordLM] = {}

    def _rule_for(self, lang: str) -> str:
        if self.rule != AUTO:
            return self.rule
        card = card_path(self.languages[lang])
        if lang not in self.references or not card.is_file():
            return "ppl"
        fitted = json.loads(card.read_text())
        return fitted.get("best", "ppl") if "xent" in fitted else "ppl"

    def _taus(self, tau) -> dict[str, float]:
        """tau per language: from the config, else from <lang>.tau.json (fit-tau)."""
        self.tau_sources: dict[str, dict] = {}
        if isinstance(tau, (int, float)):
            tau = dict.fromkeys(self.languages, float(tau))
        taus = dict(tau or {})
        for lang in taus:
            self.tau_sources[lang] = {"method": "given in the config (or calibrated)"}
        for lang, model in self.languages.items():
            card = card_path(model)
            if lang not in taus and card.is_file():
                fitted = json.loads(card.read_text()).get(self.rules[lang])
                if fitted is None:
                    continue  # the card has no tau for this rule: calibration places one
                taus[lang] = fitted["tau"]
                self.tau_sources[lang] = {"card": str(card), **fitted}
        return {k: float(v) for k, v in taus.items()}

    def model_files(self) -> list[Path]:
        return [*self.languages.values(), *self.references.values()]

    def describe(self) -> dict:
        return {"models": str(self.models_dir), "languages": sorted(self.languages),
                "rule": self.rule, "rules": self.rules, "tau": self.tau,
                "tau_sources": self.tau_sources}

    @property
    def needs_calibration(self) -> bool:
        return set(self.tau) != set(self.languages)

    def calibrate(self, sample: pa.Table, workdir: Path) -> dict:
        """tau in the valley of each language's score distribution, where not given."""
        taus = dict(self.tau)
        for lang in self.languages:
            if lang in taus:
                continue
            column = "harm_ppl" if self.rules[lang] == "ppl" else "harm_xent"
            values = [v for l, v in zip(sample.column("lang").to_pylist(),
                                        sample.column(column).to_pylist())
                      if l == lang and v is not None]
            taus[lang] = valley_tau(values, log=self.rules[lang] == "ppl")
        return {"tau": taus}

    def setup(self) -> None:
        self._lms = {lang: WordLM(p) for lang, p in self.languages.items()}
        self._refs = {lang: WordLM(p) for lang, p in self.references.items()}

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._lms:
            self.setup()
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist()
        n = len(texts)
        ppl: list[float | None] = [None] * n
        xent: list[float | None] = [None] * n
        for lang, lm in self._lms.items():
            rows = [i for i, l in enumerate(langs) if l == lang]
            if not rows:
                continue
            subset = [texts[i] for i in rows]
            for i, value in zip(rows, lm.perplexities(subset)):
                ppl[i] = value
            if lang in self._refs:
                for i, ref in zip(rows, self._refs[lang].perplexities(subset)):
                    xent[i] = math.log(ppl[i]) - math.log(ref)
        flags = [self._flag(l, p, x) for l, p, x in zip(langs, ppl, xent)]
        batch = batch.append_column("harm_ppl", pa.array(ppl, pa.float32()))
        batch = batch.append_column("harm_xent", pa.array(xent, pa.float32()))
        return batch.append_column("harm_flag", pa.array(flags, pa.bool_()))

    def _flag(self, lang, ppl, xent) -> bool | None:
        score = ppl if self.rules.get(lang) == "ppl" else xent
        if score is None or lang not in self.tau:
            return None
        return score < self.tau[lang]
