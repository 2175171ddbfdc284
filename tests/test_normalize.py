"""Address normalisation and masking (filterd/normalize.py).

Phone numbers: E.164 through phonenumbers, with a fast path for numbers already
in E.164 that must agree with phonenumbers' own parse/is_valid_number/format.
Emails: trimmed, IDNA domain, whole address lower-cased.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers import timezone as phone_zones

from filterd.errors import InvalidAddress
from filterd.model import Address, Channel
from filterd.normalize import (
    _number_time_zone,
    channel_of,
    checked_email,
    fits,
    is_region,
    mask,
    mask_text,
    normalize,
    normalize_email,
    normalize_phone,
    phone_time_zone,
    scrub,
)

CN = "+8613800138000"


def slow_path(text: str, region: str | None = None) -> str | None:
    """phonenumbers' own answer: the E.164 form of a valid number, else None."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    result: str = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return result


def fast_path(text: str) -> str | None:
    """normalize_phone's answer without a default region, None when it refuses."""
    try:
        return normalize_phone(text, None)
    except InvalidAddress:
        return None


def example_numbers() -> list[str]:
    """Every example number phonenumbers ships (each region and type, non-geo too), E.164."""
    numbers = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in vars(PhoneNumberType).values():
            if isinstance(kind, int):
                number = phonenumbers.example_number_for_type(region, kind)
                if number is not None:
                    numbers.add(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            numbers.add(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    return sorted(numbers)


EXAMPLES = example_numbers()
COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


# --- phone numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        CN,
        "+86 138 0013 8000",
        "+86-138-0013-8000",
        "+86 (138) 0013.8000",
        "  +8613800138000\t",
        "+86 138-0013 8000 ",
    ],
)
def test_e164_with_and_without_separators(raw: str) -> None:
    """E.164 input, with or without spaces, dashes, dots or brackets, is canonical E.164."""
    assert normalize_phone(raw, None) == CN
    assert normalize_phone(raw, "US") == CN


@pytest.mark.parametrize("raw", ["13800138000", "138 0013 8000", "138-0013-8000"])
def test_national_number_with_default_region(raw: str) -> None:
    """A national number is read in the default region: CN 13800138000 -> +8613800138000."""
    assert normalize_phone(raw, "CN") == CN


def test_national_number_in_another_region() -> None:
    """The default region decides the country code of a national number."""
    assert normalize_phone("(201) 555-0123", "US") == "+12015550123"
    assert normalize_phone("0121 234 5678", "GB") == "+441212345678"


def test_national_number_without_region_is_rejected() -> None:
    """A national number with no default region is rejected, naming the value."""
    with pytest.raises(InvalidAddress, match="default_region") as caught:
        normalize_phone("13800138000", None)
    assert caught.value.value == "13800138000"
    assert "'13800138000'" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", "CN"),
        ("   ", "CN"),
        ("+", None),
        ("abc", "CN"),
        ("1380013800a", "CN"),
        ("++8613800138000", None),
        ("+86 138 0013 8000 ext. 5", None),
        ("+8613800138000#", None),
        ("+860000", None),
        ("+86 1380013800", None),
        ("+86 13800138000 0", None),
        ("+999 123456789", None),
        ("+0 8613800138000", None),
        ("12345", "CN"),
        ("00000000000", "CN"),
        ("+1 555 555 5555", None),
    ],
)
def test_invalid_numbers_raise_naming_the_value(raw: str, region: str | None) -> None:
    """An invalid or malformed number raises InvalidAddress whose message quotes it."""
    with pytest.raises(InvalidAddress) as caught:
        normalize_phone(raw, region)
    assert caught.value.value == raw
    assert repr(raw) in str(caught.value)


def test_examples_are_numerous() -> None:
    """The example list covers many regions and types (guards the property below)."""
    assert len(EXAMPLES) > 1000
    assert CN[:3] in {e[:3] for e in EXAMPLES}


def test_every_example_number_normalises_to_itself() -> None:
    """Each region's example number of each type, in E.164, normalises to itself."""
    wrong = {e: fast_path(e) for e in EXAMPLES if fast_path(e) != e}
    assert wrong == {}


@st.composite
def e164_candidates(draw: st.DrawFn) -> str:
    """'+' + a real country code + 4..13 random digits."""
    code = draw(st.sampled_from(COUNTRY_CODES))
    digits = draw(st.text("0123456789", min_size=4, max_size=13))
    return f"+{code}{digits}"


@st.composite
def near_examples(draw: st.DrawFn) -> str:
    """An example number with one digit changed, added or dropped (mostly near-valid)."""
    number = draw(st.sampled_from(EXAMPLES))
    position = draw(st.integers(min_value=2, max_value=len(number) - 1))
    digit = draw(st.sampled_from("0123456789"))
    edit = draw(st.sampled_from(["replace", "insert", "delete", "keep"]))
    if edit == "replace":
        return number[:position] + digit + number[position + 1 :]
    if edit == "insert":
        return number[:position] + digit + number[position:]
    if edit == "delete":
        return number[:position] + number[position + 1 :]
    return number


@given(st.one_of(e164_candidates(), near_examples()))
@settings(max_examples=800)
@example("+8613800138000")
@example("+861380013800")
@example("+0086")
@example("+390669812345")  # Italian leading zero
@example("+4401212345678")  # national prefix written after the country code
def test_fast_path_agrees_with_phonenumbers(text: str) -> None:
    """normalize_phone(s, None) raises exactly when phonenumbers finds s invalid, else
    returns phonenumbers' E.164 form."""
    assert fast_path(text) == slow_path(text)


REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


@st.composite
def written_numbers(draw: st.DrawFn) -> str:
    """An E.164 candidate or a near-example, as it is or with a separator, spaces
    around it, or written in full-width characters."""
    text = draw(st.one_of(e164_candidates(), near_examples()))
    form = draw(st.sampled_from(["as is", "spaced", "padded", "full-width"]))
    if form == "spaced":
        cut = draw(st.integers(min_value=2, max_value=len(text) - 1))
        return f"{text[:cut]}{draw(st.sampled_from([' ', '-', '.']))}{text[cut:]}"
    if form == "padded":
        return f" {text}\t"
    if form == "full-width":
        return text.translate({ord(c): ord(c) + 0xFEE0 for c in "+0123456789"})
    return text


@given(written_numbers(), st.one_of(st.none(), st.sampled_from(REGIONS)))
@settings(max_examples=1500)
@example("+8613800138000", "CN")
@example("+8613800138000", "US")
@example("+12015550123", "CN")
@example("+4401212345678", "GB")
def test_canonical_shortcut_agrees_with_phonenumbers_in_every_region(
    text: str, region: str | None
) -> None:
    """Whatever the default region, a number written with its `+` normalises to exactly
    what phonenumbers' parse/is_valid_number/format make of it (E.164), or is refused
    when they find it invalid: the shortcut for canonical input never answers
    otherwise."""
    expected = slow_path(unicodedata.normalize("NFKC", text).strip(), region)
    try:
        got: str | None = normalize_phone(text, region)
    except InvalidAddress:
        got = None
    assert got == expected


CN_NATIONAL = st.builds(
    lambda d, sep: sep.join((d[:3], d[3:7], d[7:])),
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.sampled_from(["", " ", "-"]),
)
PHONES = st.one_of(st.sampled_from(EXAMPLES), near_examples(), CN_NATIONAL)
LOCALS = st.one_of(
    st.from_regex(
        r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True
    ),
    st.sampled_from(["Jöhn", "用户", "ÄBC.Ünïcode", "İstanbul", "ẞtraße"]),
)
LABELS = st.from_regex(r"[A-Za-z0-9ü](?:[A-Za-z0-9ü-]{0,10}[A-Za-z0-9ü])?", fullmatch=True)
EMAILS = st.builds(
    lambda local, labels, tld, pad: f"{pad}{local}@{'.'.join(labels)}.{tld}{pad}",
    LOCALS,
    st.lists(LABELS, min_size=1, max_size=3),
    st.sampled_from(["com", "Example", "CN", "org", "xn--fiqs8s"]),
    st.sampled_from(["", " ", "\t"]),
)


def normalised_or_none(raw: str) -> Address | None:
    try:
        return normalize(raw, "CN")
    except InvalidAddress:
        return None


@given(st.one_of(PHONES, EMAILS))
@settings(max_examples=200)
@example(CN)
@example("John.Doe@Bücher.Example ")
def test_normalize_is_idempotent(raw: str) -> None:
    """Normalising a canonical address gives it back unchanged, on the same channel."""
    first = normalised_or_none(raw)
    if first is not None:
        assert normalize(first.canonical, "CN") == first
        assert normalize(first.canonical, None) == first


# --- email --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("John.Doe@Bücher.Example ", "john.doe@xn--bcher-kva.example"),
        ("  Alice@Example.COM", "alice@example.com"),
        ("alice@example.com.", "alice@example.com"),
        ("ALICE+promo@MAIL.Example.org", "alice+promo@mail.example.org"),
        ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_email_canonicalisation(raw: str, canonical: str) -> None:
    """Emails are trimmed, the domain IDNA-encoded, the whole address lower-cased."""
    assert normalize_email(raw) == canonical
    assert normalize(raw) == Address(canonical, Channel.EMAIL)


@pytest.mark.parametrize(
    "raw",
    [
        "@example.com",
        "john@",
        "john",
        "john@localhost",
        "jo hn@example.com",
        'jo"hn@example.com',
        "john@[127.0.0.1]",
        ".john@example.com",
        "john.@example.com",
        "jo..hn@example.com",
        "john@-bad.example",
        "john@bad-.example",
        "john@exa mple.com",
        "john@example..com",
        "john@ex_ample.com",
        "a" * 65 + "@example.com",
        "john@" + "a" * 64 + ".com",
        "john@" + ".".join(["a" * 60] * 5) + ".com",
        "jo\x00hn@example.com",
    ],
)
def test_invalid_emails_raise_naming_the_value(raw: str) -> None:
    """An invalid email raises InvalidAddress whose message quotes the raw value."""
    with pytest.raises(InvalidAddress) as caught:
        normalize(raw)
    assert caught.value.value == raw
    assert repr(raw) in str(caught.value)


def test_email_local_part_of_64_octets_is_accepted() -> None:
    """A 64-octet local part is the longest allowed."""
    assert normalize_email("a" * 64 + "@example.com") == "a" * 64 + "@example.com"


def email_outcome(check: object, raw: str) -> str:
    """What an email normaliser makes of `raw`: its canonical form, or the reason."""
    assert callable(check)
    try:
        return f"ok {check(raw)}"
    except InvalidAddress as exc:
        return f"refused {exc.reason}"


EMAIL_PARTS = st.sampled_from(
    ["a", "Z", "0", "-", ".", "..", "@", "!", "'", "_", "~", '"', " ", "\t", "(", "[", ":",
     "é", "例", "ä", "\x00", "\x7f", "example", "COM", "x" * 30, "-a", "a-"]
)  # fmt: skip


@given(st.lists(EMAIL_PARTS, max_size=14).map("".join))
@settings(max_examples=1500)
@example("a" * 64 + "@example.com")
@example("a" * 65 + "@example.com")
@example("john@" + ".".join(["a" * 61] * 4) + ".com")
@example("john@" + "a" * 63 + ".com")
@example("John.Doe@Example.COM")
def test_plain_email_fast_path_agrees_with_the_rules(raw: str) -> None:
    """normalize_email (one regular expression for a plain ASCII address) gives the
    same canonical form, or refuses for the same reason, as the rules one by one."""
    assert email_outcome(normalize_email, raw) == email_outcome(checked_email, raw)


def test_normalize_dispatches_on_at_sign() -> None:
    """An address with '@' is email; without, sms."""
    assert normalize(CN) == Address(CN, Channel.SMS)
    assert normalize("13800138000", "CN") == Address(CN, Channel.SMS)
    assert normalize("a@example.com").channel is Channel.EMAIL
    assert channel_of("a@example.com") is Channel.EMAIL
    assert channel_of(CN) is Channel.SMS


@pytest.mark.parametrize(
    ("address", "channel", "expected"),
    [
        (Address(CN, Channel.SMS), Channel.SMS, True),
        (Address(CN, Channel.SMS), Channel.VOICE, True),
        (Address(CN, Channel.VOICE), Channel.SMS, True),
        (Address(CN, Channel.SMS), Channel.EMAIL, False),
        (Address("a@example.com", Channel.EMAIL), Channel.EMAIL, True),
        (Address("a@example.com", Channel.EMAIL), Channel.SMS, False),
        (Address("a@example.com", Channel.EMAIL), Channel.VOICE, False),
    ],
)
def test_fits(address: Address, channel: Channel, expected: bool) -> None:
    """A phone number takes sms and voice, never email; an email address email only."""
    assert fits(address, channel) is expected


def test_is_region() -> None:
    """is_region knows phonenumbers' region codes and nothing else."""
    assert is_region("CN")
    assert is_region("US")
    assert not is_region("cn")
    assert not is_region("XX")
    assert not is_region("001")


# --- time zone of a phone number ----------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "zone"),
    [
        (CN, "Asia/Shanghai"),  # mobile
        ("+861065529988", "Asia/Shanghai"),  # Beijing fixed line
        ("+12015550123", "America/New_York"),  # New Jersey: one zone
        ("+442079460000", "Europe/London"),
    ],
)
def test_phone_time_zone_of_a_number_with_one_zone(e164: str, zone: str) -> None:
    """A number phonenumbers places in exactly one zone gives that zone's IANA name
    (every +86 number: Asia/Shanghai)."""
    assert phone_time_zone(e164) == zone
    assert phone_zones.time_zones_for_number(phonenumbers.parse(e164)) == (zone,)


@pytest.mark.parametrize(
    "e164",
    [
        "+18005550123",  # US toll-free: every zone of +1
        "+12085550123",  # Idaho: America/Boise and America/Los_Angeles
        "+79161234567",  # Russian mobile: the zones of all Russia
    ],
)
def test_phone_time_zone_of_a_number_with_several_zones_is_none(e164: str) -> None:
    """A number phonenumbers places in several zones gives None (the caller falls
    back to compliance.time_zone)."""
    assert len(phone_zones.time_zones_for_number(phonenumbers.parse(e164))) > 1
    assert phone_time_zone(e164) is None


@pytest.mark.parametrize("e164", ["+19999999999", "+80012345678", "not a number", ""])
def test_phone_time_zone_unknown_is_none(e164: str) -> None:
    """An invalid or non-geographic number (phonenumbers' Etc/Unknown placeholder)
    and text that is no number give None, not an error."""
    assert phone_time_zone(e164) is None


def test_phone_time_zone_of_a_one_zone_country_needs_no_lookup_per_number() -> None:
    """A number of a country in one zone (+86, +852) is answered from its calling code,
    with no per-number lookup or cache entry (a campaign's millions of numbers do not
    fill a cache); a number of a country with several zones is looked up in full
    once, then answered from the cache with the same zone."""
    _number_time_zone.cache_clear()
    assert phone_time_zone(CN) == phone_time_zone("+8613911112222") == "Asia/Shanghai"
    assert phone_time_zone("+85291234567") == "Asia/Hong_Kong"
    assert _number_time_zone.cache_info().currsize == 0
    assert phone_time_zone("+14155552671") == phone_time_zone("+14155552671")
    assert phone_time_zone("+14155552671") == "America/Los_Angeles"
    assert _number_time_zone.cache_info().hits == 2


# --- masking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canonical", "masked"),
    [
        (CN, "+86138****8000"),
        ("john@example.com", "j***@example.com"),
        ("j@example.com", "?***@example.com"),
        ("john.doe@xn--bcher-kva.example", "j***@xn--bcher-kva.example"),
    ],
)
def test_mask(canonical: str, masked: str) -> None:
    """mask() keeps the prefix and last four digits of a number, and the first letter (not
    a lone one) and domain of an email."""
    assert mask(canonical) == masked


@given(st.one_of(PHONES, EMAILS))
@settings(max_examples=200)
@example(CN)
@example("a@b.cd")
def test_mask_never_contains_the_address(raw: str) -> None:
    """A masked canonical address never contains the full canonical address."""
    address = normalised_or_none(raw)
    if address is None:
        return
    masked = mask(address.canonical)
    assert address.canonical not in masked
    assert "****" in masked or "***@" in masked or masked.startswith("?@")


def test_scrub_masks_the_consumers_own_address() -> None:
    """scrub() replaces the consumer's canonical address and national number by the mask."""
    phone = Address(CN, Channel.SMS)
    email = Address("john@example.com", Channel.EMAIL)
    assert scrub("form from +8613800138000", phone) == "form from +86138****8000"
    assert scrub("called 13800138000", phone) == "called +86138****8000"
    assert scrub("reply to john@example.com", email) == "reply to j***@example.com"
    assert scrub("nothing personal", phone) == "nothing personal"
    assert scrub(None, phone) is None
    assert scrub("", phone) == ""


# --- known defects ---------------------------------------------------------------------------


def hidden_digits(canonical: str) -> int:
    return len(re.sub(r"\D", "", canonical)) - len(re.sub(r"\D", "", mask(canonical)))


@pytest.mark.parametrize("canonical", ["+12015550123", "+4916412345"])
def test_mask_hides_at_least_four_digits(canonical: str) -> None:
    """'****' hides at least four digits of a phone number, as in +86138****8000."""
    assert normalize_phone(canonical, None) == canonical
    assert hidden_digits(canonical) >= 4


@pytest.mark.parametrize("canonical", ["*@example.com", "**@example.com", "a***@example.com"])
def test_mask_of_star_local_part_hides_it(canonical: str) -> None:
    """Even a local part written with '*' is not shown in full by the mask."""
    assert normalize_email(canonical) == canonical
    assert canonical not in mask(canonical)


def test_scrub_masks_national_number_of_three_digit_country_code() -> None:
    """The national form of a +852 number is masked like a +86 one."""
    phone = Address("+85291234567", Channel.SMS)
    assert "91234567" not in (scrub("called 91234567", phone) or "")


def test_scrub_masks_email_in_any_case() -> None:
    """An email written in upper case in the evidence is still masked."""
    email = Address("john@example.com", Channel.EMAIL)
    assert "john@example.com" not in (scrub("from JOHN@EXAMPLE.COM", email) or "").lower()


# --- free text: every address in it masked (SPEC §11) ---------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "referred by frank.other@example.org, +8613611112222",
            "referred by f***@example.org, +86136****2222",
        ),
        ("call 136 1111 2222 or (010) 6552-1234", "call 13611****22 or (01065****34"),
        ("tel:0171/1234567.", "tel:01711****67."),
        ("mailto:Frank@Example.ORG", "mailto:F***@Example.ORG"),
        ("<a@b.cn>,<13611112222@sms.example>", "<?***@b.cn>,<?***@sms.example>"),
        ("ticket 20240501123 ok", "ticket 20240****23 ok"),
        ("全角１３６１１１１２２２２", "全角１３６１１****２２"),
        ("one-click POST at 2025-06-15T12:00:00+00:00 from 127.0.0.1", None),
        ("web form https://example.com/signup?c=9 from 203.0.113.7 on 2024-05-01", None),
        ("signed form #12", None),
        ("f***@example.org +86136****2222", None),
    ],
)
def test_mask_text_masks_every_address(text: str, masked: str | None) -> None:
    """mask_text() masks every email (first character and domain kept) and every run of
    seven or more digits (separators dropped, middle digits hidden), keeps IPv4 addresses,
    ISO dates and short numbers, and leaves masked text as it is (None: unchanged)."""
    assert mask_text(text) == (text if masked is None else masked)


TEXT_ALPHABET = st.sampled_from(list("0123456789 .-/()+@*?abxZ_,:<>é用１（）．－\t\n"))
FRAGMENTS = st.one_of(
    PHONES,
    EMAILS,
    st.from_regex(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}", fullmatch=True),
    st.from_regex(r"(?:19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]", fullmatch=True),
    st.text(alphabet=TEXT_ALPHABET, max_size=12),
    st.sampled_from(["form", "at", "from", " ", ", ", "+", "(", ")", "@", ".", "***"]),
)
FREE_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=TEXT_ALPHABET, max_size=60),
    st.lists(FRAGMENTS, max_size=8).map("".join),
)
LOCAL_CHAR = re.compile(r'[^\s@<>()\[\],;:"]')
SEVEN_DIGITS = re.compile(r"\d(?:[\s.\-/()（）．－]{0,3}\d){6}")
KEPT = re.compile(
    r"(?<!\d)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?!\.?\d)|(?<!\d)[0-9]{4}-[0-9]{2}-[0-9]{2}(?!\d)"
)


def revealed_locals(text: str) -> list[str]:
    """The local part before each `@` that a domain follows, if it shows more than one
    character that is not `*`."""
    found = []
    for at in re.finditer(r"@(?=[\w.\-])", text):
        start = at.start()
        while start > 0 and LOCAL_CHAR.match(text[start - 1]):
            start -= 1
        local = text[start : at.start()]
        if len(local.replace("*", "")) > 1:
            found.append(local)
    return found


@given(FREE_TEXT)
@settings(max_examples=500)
@example("a@b@c.d")
@example("x" * 70 + "@y.org")
@example("123456 7frank@x.org")
@example("127.0.0.1 1234567")
def test_mask_text_is_idempotent(text: str) -> None:
    """Masking masked text changes nothing."""
    once = mask_text(text)
    assert mask_text(once) == once


@given(FREE_TEXT)
@settings(max_examples=500)
@example("a@1234567.com")
@example("5.127.0.0.1.")
@example("2024-01-15 10:30 +86 138 0013 8000")
def test_mask_text_leaves_no_address(text: str) -> None:
    """After masking, no email shows more than one character of its local part, and no run
    of seven digits is left outside an IPv4 address or an ISO date."""
    masked = mask_text(text)
    assert revealed_locals(masked) == []
    assert SEVEN_DIGITS.search(KEPT.sub("#", masked)) is None


@given(st.lists(st.one_of(PHONES, EMAILS), min_size=1, max_size=4), st.sampled_from([" ", ", "]))
@settings(max_examples=300)
def test_mask_text_hides_each_address_written(addresses: list[str], separator: str) -> None:
    """Neither an email written in the text (unless already written masked, `j***@`) nor
    the digits of a phone number of seven digits or more written in it (in E.164 or
    national form) survive masking."""
    masked = mask_text("from " + separator.join(addresses) + " end")
    digits = re.sub(r"\D", "", masked)
    for address in addresses:
        number = re.sub(r"\D", "", address)
        if "@" in address:
            local = address.strip().rpartition("@")[0]
            assert address.strip() not in masked or re.fullmatch(r"[^\d*]\*{3}|\?", local)
        elif len(number) >= 7:
            assert number not in digits


@given(st.text(max_size=80).filter(lambda t: "@" not in t and sum(map(str.isdecimal, t)) < 7))
@settings(max_examples=300)
def test_mask_text_leaves_text_without_addresses_unchanged(text: str) -> None:
    """Text with no `@` and fewer than seven digits comes back as it went in."""
    assert mask_text(text) == text


# --- fuzzing (issue 6; the long run is bench/fuzz.py) -------------------------------------

E164_FORM = re.compile(r"^\+[1-9][0-9]{5,16}$")  # phonenumbers: DE numbers reach 17 digits
FUZZ_ALPHABET = st.sampled_from(list("+0123456789 ().-@abzAZé.中-ａ０١\x00\t_[]<>\"'\\"))
FUZZ_ADDRESSES = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=FUZZ_ALPHABET, max_size=40),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=70), st.text(max_size=260)),
    st.builds(lambda a, b: f"{a}@{b}", LOCALS, st.text(alphabet=FUZZ_ALPHABET, max_size=30)),
    PHONES,
    EMAILS,
)


@given(FUZZ_ADDRESSES, st.sampled_from([None, "CN", "US", "GB", "DE"]))
@settings(max_examples=600, deadline=None)
def test_fuzz_any_text_normalises_or_raises_invalid_address(raw: str, region: str | None) -> None:
    """normalize() of any string returns a well-formed Address (E.164, or a lower-case email
    of at most 254 octets) that normalises to itself, or raises InvalidAddress naming the
    value; never any other exception."""
    error: InvalidAddress | None = None
    try:
        address = normalize(raw, region)
    except InvalidAddress as exc:
        error = exc
    if error is not None:
        assert error.value == raw
        return
    if address.channel is Channel.SMS:
        assert E164_FORM.match(address.canonical)
    else:
        assert address.canonical == address.canonical.lower()
        assert "@" in address.canonical
        assert len(address.canonical.encode()) <= 254
    assert normalize(address.canonical, region) == address
    assert address.canonical not in mask(address.canonical)
