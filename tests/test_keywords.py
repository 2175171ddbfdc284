"""Consumer reply text → intent (filterd/keywords.py): normalisation and keyword matching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filterd.keywords import Intent, Keywords, classify, first_word, mentioned, normalise

# The lists of SPEC §3's reference config.
OPT_OUT = [
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "T", "TD", "N", "R", "退订", "退訂",
]  # fmt: skip
OPT_IN = ["START", "YES", "UNSTOP"]
HELP = ["HELP", "INFO"]
KEYWORDS = Keywords.from_lists(OPT_OUT, OPT_IN, HELP)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("退订", Intent.OPT_OUT),
        ("退訂", Intent.OPT_OUT),
        ("\uff34\uff24", Intent.OPT_OUT),  # full-width ＴＤ
        ("td。", Intent.OPT_OUT),
        ("TD", Intent.OPT_OUT),
        ("Stop", Intent.OPT_OUT),
        (" STOP! ", Intent.OPT_OUT),
        ("S.T.O.P.", Intent.OPT_OUT),
        ("stop all", Intent.OPT_OUT),
        ("Unsubscribe", Intent.OPT_OUT),
        ("退订。", Intent.OPT_OUT),
        ("【退订】", Intent.OPT_OUT),
        ("\u200bSTOP\u200b", Intent.OPT_OUT),  # zero-width spaces
        ("STOP❤️", Intent.OPT_OUT),  # emoji with a variation selector
        ("t", Intent.OPT_OUT),
        ("N", Intent.OPT_OUT),
        ("START", Intent.OPT_IN),
        ("yes!", Intent.OPT_IN),
        ("unstop", Intent.OPT_IN),
        ("HELP", Intent.HELP),
        ("help?", Intent.HELP),
        ("Info", Intent.HELP),
        ("", Intent.NONE),
        ("!!!", Intent.NONE),
        ("😀", Intent.NONE),
        ("Hello, is the shop open today?", Intent.NONE),
        ("好的，谢谢", Intent.NONE),
        ("stopp", Intent.NONE),
        ("tdd", Intent.NONE),
    ],
)
def test_keyword_table(text: str, intent: Intent) -> None:
    """Keywords match after NFKC, case folding, 訂→订 and punctuation/space/symbol stripping."""
    assert KEYWORDS.classify(text) is intent
    assert classify(text, OPT_OUT, OPT_IN, HELP) is intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("STOP please", Intent.OPT_OUT),
        ("Stop, thank you", Intent.OPT_OUT),
        ("stop texting me", Intent.OPT_OUT),
        ("...STOP now", Intent.OPT_OUT),
        ("TD 谢谢", Intent.OPT_OUT),
        ("退订，谢谢", Intent.OPT_OUT),
        ("退订 谢谢", Intent.OPT_OUT),
        ("unsubscribe me please", Intent.OPT_OUT),
        ("don't stop", Intent.NONE),
        ("please don't STOP", Intent.NONE),
        ("Please stop", Intent.NONE),
        ("退订谢谢", Intent.NONE),
        ("不要退订", Intent.NONE),
        ("R u there?", Intent.NONE),
        ("T minus 5", Intent.NONE),
        ("N o", Intent.NONE),
        ("start over", Intent.NONE),
        ("yes please", Intent.NONE),
        ("help me", Intent.NONE),
    ],
)
def test_first_word_rule(text: str, intent: Intent) -> None:
    """An opt-out keyword of 2+ characters as the first word opts out; nothing else does.

    Documented choice: "STOP please" is a stop request (US carrier practice);
    "don't stop" is not. Single-letter keywords, opt-in and help need the whole
    message. CJK text is split only at spaces or punctuation.
    """
    assert KEYWORDS.classify(text) is intent


def test_opt_out_wins_over_opt_in() -> None:
    """A keyword configured as both opt-out and opt-in opts out."""
    keywords = Keywords.from_lists(["STOP", "END"], ["END", "START"], ["END"])
    assert keywords.classify("end") is Intent.OPT_OUT
    assert classify("End.", ["END"], ["END"], []) is Intent.OPT_OUT


def test_opt_out_first_word_wins_over_whole_message_opt_in() -> None:
    """An opt-out first word beats an opt-in or help keyword matching the whole message."""
    keywords = Keywords.from_lists(["STOP"], ["STOP START"], ["STOP HELP"])
    assert keywords.classify("stop start") is Intent.OPT_OUT
    assert keywords.classify("stop help") is Intent.OPT_OUT


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("ＴＤ", "td"),
        (" Stop! ", "stop"),
        ("退訂。", "退订"),
        ("取消訂閱", "取消订阅"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("①", "1"),
        ("a\tb\nc", "abc"),
        ("$T+O~P€", "top"),
        ("1️⃣", "1"),
    ],
)
def test_normalise(text: str, form: str) -> None:
    """normalise: NFKC, casefold, 訂→订 / 閱→阅, without P*, Z*, S*, Cc, Cf and emoji marks."""
    assert normalise(text) == form


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("STOP please", "stop"),
        ("  ¡¡ Stop!! now", "stop"),
        ("don't stop", "don"),
        ("退订，谢谢", "退订"),
        ("退订谢谢", "退订谢谢"),
        ("", ""),
        ("...", ""),
    ],
)
def test_first_word(text: str, word: str) -> None:
    """The first word is the normalised text before the first space or punctuation."""
    assert first_word(text) == word


def test_keywords_from_lists_normalise_and_drop_empties() -> None:
    """Config keywords are normalised like messages; one that normalises to '' is dropped."""
    keywords = Keywords.from_lists(["ＳＴＯＰ", "退訂", "!!"], ["Start "], [])
    assert keywords.opt_out == frozenset({"stop", "退订"})
    assert keywords.opt_in == frozenset({"start"})
    assert keywords.help == frozenset()
    assert keywords.classify("!!") is Intent.NONE


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_normalise_is_idempotent(text: str) -> None:
    """Normalising twice changes nothing, and the result has no spaces or punctuation."""
    form = normalise(text)
    assert normalise(form) == form
    assert not any(c.isspace() for c in form)


NOT_KEYWORD_ALPHABET = st.sampled_from([*"abdfgjkmvwxz0123456789 ,.!?好的谢谢您", "\u3000"])


@given(st.text(NOT_KEYWORD_ALPHABET, max_size=80))
@settings(max_examples=300)
def test_random_text_is_none(text: str) -> None:
    """Text made of letters that spell no keyword (any spacing or punctuation) is NONE."""
    assert KEYWORDS.classify(text) is Intent.NONE


FULL_WIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


@given(
    st.sampled_from(OPT_OUT),
    st.lists(st.booleans(), min_size=12, max_size=12),
    st.sampled_from(["", " ", "!", "。", "！", "\u3000", "  ", "...", "\n"]),
    st.sampled_from(["", " ", "!", "。", "？", "\u3000", "\r\n", " :) "]),
)
@settings(max_examples=300)
def test_decorated_opt_out_keywords_match(
    keyword: str, upper: list[bool], before: str, after: str
) -> None:
    """Any case, full width, and spaces or punctuation around keep an opt-out keyword opting out."""
    cased = "".join(
        (c.upper() if up else c.lower()) for c, up in zip(keyword, upper * 2, strict=False)
    )
    for variant in (cased, "".join(FULL_WIDTH.get(c, c) for c in cased)):
        assert KEYWORDS.classify(before + variant + after) is Intent.OPT_OUT


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("回T退订", "T"),
        ("拒收请回复R", "R"),
        ("Reply STOP to end", "STOP"),
        ("reply ｓｔｏｐ to end", "STOP"),
        ("回复退订", "退订"),
        ("Text us for more", None),
        ("Stopwatch sale", None),
        ("点击链接了解详情", None),
    ],
)
def test_mentioned_finds_the_keyword_a_cancel_instruction_names(
    text: str, found: str | None
) -> None:
    """A cancel instruction names an opt-out keyword when the keyword stands on its own
    (an ASCII keyword not touched by ASCII letters or digits, after NFKC and case
    folding; a CJK keyword anywhere): "回T退订" names T, "Text us" names nothing."""
    opt_out = ["STOP", "T", "R", "退订"]
    assert mentioned(text, opt_out) == found
