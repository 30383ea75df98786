"""fastText language identification (lid.176, GlotLID, OpenLID: any fastText
supervised model whose labels look like `__label__xx`)."""

from __future__ import annotations

from pathlib import Path

import fasttext

# fastText reports labels as __label__en; GlotLID's look like __label__eng_Latn.
_PREFIX = "__label__"


class FastTextLID:
    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            # fasttext prints a deprecation warning on load_model; the model is fine.
            self.model = fasttext.load_model(str(path))
        except ValueError as err:
            raise ValueError(f"{path}: not a fastText model ({err})") from err

    def predict(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """Top language and its probability for each text.

        fastText reads one line, so newlines become spaces first (DESIGN.md 4).
        """
        lines = [t.replace("\n", " ") for t in texts]
        labels, probs = self.model.predict(lines, k=1)
        langs = [lab[0][len(_PREFIX):] if lab else "" for lab in labels]
        # fastText's softmax can overshoot 1 by a few 1e-5.
        scores = [min(float(p[0]), 1.0) if len(p) else 0.0 for p in probs]
        return langs, scores
