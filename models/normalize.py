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
import sys
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
PUNCT_TO_ASCII = {c: ascii_ for chars, ascii_ in _PUNCT_PAIRS for c in chars}
_PUNCT = re.compile("[" + re.escape("".join(PUNCT_TO_ASCII)) + "]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_DIGIT = re.compile(r"\d")


def _combining_marks(low: int, high: int) -> re.Pattern:
    """A character class of the Unicode combining marks (category Mn) in [low, high],
    so that removing them is one pass in C instead of a Python call per character."""
    ranges, start = [], None
    for code in range(low, high + 2):
        is_mark = code <= high and unicodedata.category(chr(code)) == "Mn"
        if is_mark and start is None:
            start = code
        elif not is_mark and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(code - 1))}")
            start = None
    return re.compile("[" + "".join(ranges) + "]")


# Two classes: Python's regex engine matches a class within the BMP with a bitmap, but
# falls back to a slow range scan when a class also holds supplementary code points.
_MARKS_BMP = _combining_marks(0, 0xFFFF)
_MARKS_SUPPLEMENTARY = _combining_marks(0x10000, sys.maxunicode)
_BEYOND_BMP = re.compile("[\U00010000-\U0010FFFF]")


def strip_accents(text: str) -> str:
    text = _MARKS_BMP.sub("", unicodedata.normalize("NFD", text))
    if _BEYOND_BMP.search(text):
        text = _MARKS_SUPPLEMENTARY.sub("", text)
    return text


def normalize(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text.lower()
    if not text.isascii():  # ASCII has no accents and none of the mapped punctuation
        text = strip_accents(text)
        text = _DIGIT.sub("0", text)
        text = _PUNCT.sub(lambda m: PUNCT_TO_ASCII[m.group()], text)
    else:
        text = _DIGIT.sub("0", text)
    return _CONTROL.sub("", text)
