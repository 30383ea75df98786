"""cc_net's text normalization, step for step (Wenzek et al. 2019).

cc_net's LMs were trained on text normalized this way, so thresher must normalize
exactly the same to reproduce their perplexities. The steps, in cc_net's order:
  1. strip surrounding white space (an empty result stops here)
  2. lowercase
  3. strip accents: NFD, then drop combining marks (Unicode category Mn)
  4. every Unicode decimal digit (Python's \\d) becomes "0", one for one
  5. map Unicode punctuation to ASCII with cc_net's table (below)
  6. delete control characters U+0000-U+001F and U+007F-U+009F; this deletes "\\n",
     so a whole document becomes one line
"""

from __future__ import annotations

import re
import unicodedata

# cc_net's punctuation table, as pairs (source characters -> replacement). Kept as
# data because the LMs depend on it; FULLWIDTH DIGIT ONE is in cc_net's table too, but
# step 4 has already turned it into "0" by the time step 5 runs.
_PUNCT_PAIRS = [
    ("，、", ","), ("。", "."), ("„”“«»１」「《》", '"'), ("´’", "'"), ("∶：", ":"),
    ("？", "?"), ("！", "!"), ("（", "("), ("）", ")"), ("；", ";"), ("–━►", "-"),
    ("—", " - "), ("．", ". "), ("～", "~"), ("…", "..."), ("〈", "<"), ("〉", ">"),
    ("【", "["), ("】", "]"), ("％", "%"),
]
PUNCT_TO_ASCII = str.maketrans({c: ascii_ for chars, ascii_ in _PUNCT_PAIRS for c in chars})
CONTROL_CHARS = dict.fromkeys([*range(0, 32), *range(127, 160)])  # str.translate: delete
_DIGIT = re.compile(r"\d")


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def normalize(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = strip_accents(text.lower())
    text = _DIGIT.sub("0", text)
    return text.translate(PUNCT_TO_ASCII).translate(CONTROL_CHARS)
