"""cc_net's normalization, one step at a time, against hand-written cases."""

import pytest

from thresher.models.normalize import normalize, strip_accents


@pytest.mark.parametrize("text, expected", [
    ("  Hello World  ", "hello world"),                       # strip + lowercase
    ("", ""), ("   \n\t ", ""),                                 # empty stays empty
    ("Ça été naïve Ångström", "ca ete naive angstrom"),        # accents (NFD, drop Mn)
    ("straße", "straße"),                                      # ß has no combining mark
    ("Tel 2024-11-27, 3.14", "tel 0000-00-00, 0.00"),          # every digit -> 0
    ("٣ ४ ３", "0 0 0"),                                        # Unicode decimal digits too
    ("«Oui»，「はい」。", '"oui",' + '"はい".'),                   # Unicode punctuation -> ASCII
    ("a—b…c–d’e", "a - b...c-d'e"),
    ("line one\nline two\r\n", "line oneline two"),             # control chars deleted
    ("tab\there\x00\x7f\x85\x9f!", "tabhere!"),                 # C0, DEL and C1 deleted
    ("  Ünïcödé 42 ！ ", "unicode 00 !"),
])
def test_normalize_matches_cc_net(text, expected):
    assert normalize(text) == expected


def test_strip_accents_keeps_base_letters():
    assert strip_accents("ñandú") == "nandu"


def test_order_digits_before_punct_map():
    # cc_net's table maps FULLWIDTH DIGIT ONE to '"', but digits become 0 first.
    assert normalize("１") == "0"


@pytest.mark.parametrize("text, expected", [
    ("हिन्दी", "हिनदी"),                          # the virama is Mn; vowel signs are Mc
    ("العَرَبِيَّة", "العربية"),                       # Arabic harakat are Mn
    ("x\U0001D167y \U000E0100z", "xy z"),          # combining marks beyond the BMP
    ("𝒜", "𝒜"),                                    # a non-BMP letter stays
])
def test_combining_marks_in_every_plane_are_dropped(text, expected):
    assert normalize(text) == expected
