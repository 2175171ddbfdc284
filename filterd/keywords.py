"""Consumer reply text → intent: opt-out, opt-in, help or nothing (pure).

Text and keywords are compared after `normalise`: NFKC (full-width TD,
U+FF34 U+FF24, becomes TD), case folding, the traditional → simplified
characters of the keywords (退訂 → 退订, 訂閱 → 订阅), then every punctuation
(P*), separator (Z*), symbol (S*, emoji included), control (Cc) and format (Cf,
zero-width) character removed, with emoji variation selectors and enclosing
marks (keycaps). Letters of every script (CJK included), other marks and
digits stay.

Matching rules, in order (the first that matches wins, so opt-out beats
opt-in and help):

1. OPT_OUT when the whole message is an opt-out keyword ("Stop", " STOP! ",
   full-width "TD", "td。", "退訂"), or when its first word is an opt-out
   keyword of two or more characters ("STOP please", "Stop, thanks",
   "退订。谢谢"). US carrier practice reads "STOP please" as a stop request;
   "don't stop" and "please don't STOP" do not start with the keyword and are
   not. Single-letter keywords (T, N, R) count only as the whole message:
   "R u there?" and "T minus 5" are not requests. Words are separated by white
   space or punctuation (a hyphen too: "Stop-loss" starts with "stop"), so CJK
   written without either is not split: "退订谢谢" and "不要退订" are one word
   each and are not opt-outs.
2. OPT_IN when the whole message is an opt-in keyword (consent must be
   explicit: "START" yes, "start over" no).
3. HELP when the whole message is a help keyword.
4. Otherwise NONE.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

_TRADITIONAL = str.maketrans({"訂": "订", "閱": "阅"})
"""Traditional → simplified, for the characters of the Chinese opt-out keywords."""

_STRIPPED_CATEGORIES = ("P", "Z", "S", "Cc", "Cf")
_SEPARATOR_CATEGORIES = ("P", "Z", "Cc", "Cf")


class Intent(enum.Enum):
    """What a consumer's reply asks for."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    NONE = "none"


def _fold(text: str) -> str:
    """NFKC, case folded, NFKC again (folding can un-normalise), traditional → simplified."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.translate(_TRADITIONAL)


def _kept(char: str) -> bool:
    """False for punctuation, separators, symbols, controls, format characters and the
    marks that only dress up a symbol (emoji variation selectors, keycap enclosures)."""
    category = unicodedata.category(char)
    if category.startswith(_STRIPPED_CATEGORIES) or category == "Me":
        return False
    code = ord(char)
    return not (0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF)


def _strip(text: str) -> str:
    """`text` with only the characters `_kept` keeps, NFKC again (a removed space can let
    a letter and a mark compose)."""
    return unicodedata.normalize("NFKC", "".join(filter(_kept, text)))


def normalise(text: str) -> str:
    """The comparable form of a message or keyword (see the module docstring)."""
    return _strip(_fold(text))


def first_word(text: str) -> str:
    """The normalised first word: text up to the first space or punctuation, skipping empties."""
    word: list[str] = []
    for char in _fold(text):
        if unicodedata.category(char).startswith(_SEPARATOR_CATEGORIES):
            if _strip("".join(word)):
                break
            word = []
        else:
            word.append(char)
    return _strip("".join(word))


@dataclass(frozen=True, slots=True)
class Keywords:
    """Normalised keyword sets, built once from the configured lists."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]

    @classmethod
    def from_lists(
        cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]
    ) -> Keywords:
        """Keywords from config lists (any case or width); ones that normalise to "" are dropped."""
        return cls(_normalised(opt_out), _normalised(opt_in), _normalised(help))

    def classify(self, text: str) -> Intent:
        """The intent of one message (the rules in the module docstring)."""
        whole = normalise(text)
        if not whole:
            return Intent.NONE
        if whole in self.opt_out:
            return Intent.OPT_OUT
        first = first_word(text)
        if len(first) >= 2 and first in self.opt_out:
            return Intent.OPT_OUT
        if whole in self.opt_in:
            return Intent.OPT_IN
        if whole in self.help:
            return Intent.HELP
        return Intent.NONE


def mentioned(text: str, keywords: Iterable[str]) -> str | None:
    """The first of `keywords` that `text` names (an SMS cancel instruction such as
    "回T退订" or "Reply STOP to end" must name a keyword filterd acts on), or None.

    Compared after NFKC and case folding. A keyword of ASCII letters and digits
    counts only where no ASCII letter or digit touches it ("T" in "回T退订" and
    "STOP" in "Reply STOP" count, the "t" of "text" does not); any other keyword
    counts wherever it appears ("退订").
    """
    folded = _fold(text)
    for keyword in keywords:
        form = _fold(keyword).strip()
        if form and _names(folded, form):
            return keyword
    return None


def _names(folded: str, form: str) -> bool:
    """Whether the folded `form` appears in `folded` as `mentioned` counts it."""
    if not (form.isascii() and form.isalnum()):
        return form in folded
    start = folded.find(form)
    while start >= 0:
        end = start + len(form)
        before = folded[start - 1] if start else ""
        after = folded[end] if end < len(folded) else ""
        if not _ascii_alnum(before) and not _ascii_alnum(after):
            return True
        start = folded.find(form, start + 1)
    return False


def _ascii_alnum(char: str) -> bool:
    return bool(char) and char.isascii() and char.isalnum()


def _normalised(words: Iterable[str]) -> frozenset[str]:
    """The non-empty normalised forms of `words`."""
    return frozenset(form for form in map(normalise, words) if form)


def classify(
    text: str, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]
) -> Intent:
    """The intent of `text` given the configured keyword lists (see `Keywords` to build once)."""
    return Keywords.from_lists(opt_out, opt_in, help).classify(text)
