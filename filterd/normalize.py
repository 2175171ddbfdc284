"""Raw recipient text → a normalised `Address`, and masking for logs.

Phone numbers become E.164 through `phonenumbers` (national numbers read with
the configured default region). Numbers already written in E.164 take a fast
path that checks the same metadata patterns `phonenumbers.is_valid_number`
checks, without building a PhoneNumber object; anything the fast path is not
sure of goes the slow way, so both paths agree (a property test holds them to
it). Emails are trimmed, the domain IDNA-encoded, the whole address
lower-cased. A phone number's time zone (for quiet hours) comes from here too.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import idna
import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers import timezone as phone_zones
from phonenumbers.tzdata import TIMEZONE_DATA

from filterd.errors import InvalidAddress
from filterd.model import Address, Channel

_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-]+$")
_SEPARATORS = str.maketrans("", "", " ().-")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LOCAL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f\"(),:;<>@\[\\\]]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
"""Printable ASCII but the characters _LOCAL_FORBIDDEN names, and the dot."""
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(
    rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@(?:{_HOST_LABEL}\.)+{_HOST_LABEL}"
)
"""An ASCII address that passes every check of checked_email as it is written (no
space to trim, no trailing dot, a local part of at most 64 octets, host-name labels)
once its length (at most 254) is checked: its canonical form is the address in lower
case."""
_TYPE_DESCS = (  # the number types is_valid_number accepts; commonest first
    "mobile",
    "fixed_line",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def channel_of(raw: str) -> Channel:
    """The channel an address form implies: `@` → email, otherwise sms."""
    return Channel.EMAIL if "@" in raw else Channel.SMS


def fits(address: Address, channel: Channel) -> bool:
    """True when `channel` reaches `address`: email an email address, sms and voice a
    phone number (a phone number is never an email recipient, nor the reverse)."""
    return (address.channel is Channel.EMAIL) is (channel is Channel.EMAIL)


def normalize(raw: str, default_region: str | None = None) -> Address:
    """Return the canonical Address for `raw`, or raise InvalidAddress naming it."""
    if "@" in raw:
        return Address(normalize_email(raw), Channel.EMAIL)
    return Address(normalize_phone(raw, default_region), Channel.SMS)


def normalize_email(raw: str) -> str:
    """Canonical email: trimmed, IDNA domain, whole address lower-cased."""
    if len(raw) <= 254 and _PLAIN_EMAIL.fullmatch(raw):
        return raw.lower()  # what checked_email makes of it, in one C call
    return checked_email(raw)


def checked_email(raw: str) -> str:
    """normalize_email, rule by rule (every address; the one that names what is wrong)."""
    text = raw.strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not local:
        raise InvalidAddress(raw, "an email address needs a local part and a domain")
    try:
        local_octets = len(local.encode())
    except UnicodeEncodeError:
        raise InvalidAddress(raw, "the address is not valid UTF-8 text") from None
    if local_octets > 64:
        raise InvalidAddress(raw, "the local part is longer than 64 octets")
    if _LOCAL_FORBIDDEN.search(local) or local.startswith(".") or local.endswith("."):
        raise InvalidAddress(raw, "the local part has a character that needs quoting")
    if ".." in local:
        raise InvalidAddress(raw, "the local part has two dots in a row")
    ascii_domain = _domain_to_ascii(raw, domain)
    canonical = f"{local}@{ascii_domain}".lower()
    if len(canonical.encode()) > 254:
        raise InvalidAddress(raw, "the address is longer than 254 octets")
    return canonical


def _domain_to_ascii(raw: str, domain: str) -> str:
    name = domain.rstrip(".").lower()
    if not name or name.startswith("["):
        raise InvalidAddress(raw, "the domain must be a host name")
    if name.isascii():
        ascii_name = name  # IDNA leaves ASCII labels as they are; checked below
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidAddress(raw, f"the domain is not a valid IDNA name ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidAddress(raw, "the domain needs at least two labels")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress(raw, "the domain is not a valid host name")
    return ascii_name


def normalize_phone(raw: str, default_region: str | None) -> str:
    """E.164 for `raw`; national numbers need `default_region`. Full-width digits
    and plus signs (as typed on Chinese keyboards) are read as ASCII."""
    if _canonical_e164(raw):
        return raw  # already what the rest would make of it: one regex, no copies
    text = raw.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).strip()
    if _canonical_e164(text):
        return text
    if not text or not _PHONE_CHARS.match(text):
        raise InvalidAddress(raw, "a phone number has only digits, '+' and separators")
    compact = text.translate(_SEPARATORS)
    if _canonical_e164(compact):
        return compact
    if not compact.startswith("+") and default_region is None:
        raise InvalidAddress(
            raw, "not in E.164 form (+CC...) and registry.default_region is not set"
        )
    try:
        number = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddress(raw, f"not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidAddress(raw, "not a valid phone number")
    result: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return result


def _canonical_e164(text: str) -> bool:
    """True only when `text` is `+CC NSN` that is surely valid and already canonical:
    one regex, that of its calling code and length, found by its first three digits."""
    if text[:1] != "+" or len(text) < _MIN_E164:
        return False
    by_length = _PREFIX_PATTERNS.get(text[1:4])
    if by_length is None:
        by_length = _prefix_patterns(text[1:4])
    pattern = by_length[len(text)] if len(text) < len(by_length) else None
    return pattern is not None and pattern.fullmatch(text) is not None


def _prefix_patterns(prefix: str) -> tuple[re.Pattern[str] | None, ...]:
    """The `_code_patterns` of the calling code `prefix` (three characters) starts
    with (codes are prefix-free: at most one does), remembered for three ASCII digits
    (at most 1,000 entries); () when none does."""
    if not (prefix.isascii() and prefix.isdigit()):
        return ()
    code = next((prefix[:end] for end in (1, 2, 3) if prefix[:end] in _COUNTRY_CODES), None)
    by_length = () if code is None else _code_patterns(code)
    _PREFIX_PATTERNS[prefix] = by_length
    return by_length


_COUNTRY_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_PREFIX_PATTERNS: dict[str, tuple[re.Pattern[str] | None, ...]] = {}
"""First three digits of an E.164 number → its calling code's `_code_patterns`."""
_MIN_E164, _MAX_E164 = 7, 16
"""`+` and 6 to 15 digits."""


@functools.cache
def _code_patterns(code: str) -> tuple[re.Pattern[str] | None, ...]:
    """The regexes of the canonical numbers of calling code `code`, by their length
    in characters (None: no valid number has it), as is_valid_number judges them:
    `\\+CODE(?!(?:STRIP))(?=(?:GENERAL)\\Z)(?:TYPE1|TYPE2|...)|...`, one
    alternative per region of the code.

    A number is valid when it matches its region's general pattern and the pattern
    of some number type, each honouring its possible lengths; a number from which
    the region's national prefix rule would strip a prefix is left to the slow path
    (parse() would strip it). ASCII digits only: other scripts' digits go the slow
    way too."""
    country_code = int(code)
    metas = [
        PhoneMetadata.metadata_for_nongeo_region(country_code)
        if region == "001"
        else PhoneMetadata.metadata_for_region(region)
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
    ]
    patterns: list[re.Pattern[str] | None] = [None] * _MIN_E164
    for length in range(_MIN_E164, _MAX_E164 + 1):
        nsn = length - 1 - len(code)
        alternatives = [_region_rule(meta, nsn) for meta in metas if meta is not None]
        body = "|".join(rule for rule in alternatives if rule is not None)
        patterns.append(re.compile(rf"\+{code}(?:{body})", re.ASCII) if body else None)
    return tuple(patterns)


def _region_rule(meta: PhoneMetadata, length: int) -> str | None:
    """One region's rule for national numbers of `length` digits, None if none is."""
    general = _desc_rule(meta.general_desc)
    if length < 1 or general is None or not _admits(general, length):
        return None
    rules = (_desc_rule(getattr(meta, name)) for name in _TYPE_DESCS)
    fitting = [rule[1] for rule in rules if rule is not None and _admits(rule, length)]
    if not fitting:
        return None
    strip = meta.national_prefix_for_parsing
    no_strip = f"(?!(?:{strip}))" if strip else ""
    alternatives = "|".join(f"(?:{p})" for p in fitting)
    return f"{no_strip}(?=(?:{general[1]})\\Z)(?:{alternatives})"


def _admits(rule: tuple[frozenset[int], str], length: int) -> bool:
    lengths, _ = rule
    return not lengths or length in lengths


def _desc_rule(desc: object) -> tuple[frozenset[int], str] | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if desc is None or pattern is None:
        return None
    return frozenset(getattr(desc, "possible_length", ()) or ()), pattern


def mask(canonical: str) -> str:
    """A log-safe form: `+86138****8000`, `j***@example.com`.

    Phone numbers keep at most the country code and a few leading digits and
    the last 2-4 digits, hiding at least 4; the mask never equals the address.
    """
    if "@" in canonical:
        local, _, domain = canonical.rpartition("@")
        if not local.strip("*"):
            return f"?@{domain}"  # a local part of stars would hide inside any mask
        first = local[:1] if len(local) > 1 and local[:1] not in "*?" else "?"
        masked = f"{first}***@{domain}"
        if masked == canonical:
            masked = f"{first}{'*' * (len(local) + 1)}@{domain}"
        return masked
    return "+" + _hide_digits(canonical.lstrip("+"))


def _hide_digits(digits: str) -> str:
    """The digits of a number with the middle ones (at least four) replaced by `*`."""
    tail = 4 if len(digits) >= 12 else 2
    head = max(0, min(5, len(digits) - tail - 4))
    hidden = len(digits) - head - tail
    return f"{digits[:head]}{'*' * hidden}{digits[len(digits) - tail :]}"


_DIGIT_RUN = re.compile(r"\+?[0-9][0-9 ().\-]{4,}[0-9]")


def scrub(text: str | None, address: Address) -> str | None:
    """`text` with the consumer's own address masked (no raw address is stored).

    An email is found in any letter case; a phone number in E.164 or national
    form, with or without separators.
    """
    if not text:
        return text
    masked = mask(address.canonical)
    if address.channel is Channel.EMAIL:
        return re.sub(re.escape(address.canonical), masked, text, flags=re.IGNORECASE)
    national = _national_number(address.canonical)

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[^0-9]", "", match.group(0))
        return masked if digits.endswith(national) else match.group(0)

    return _DIGIT_RUN.sub(replace, text)


# Free text (evidence, source) is stored with a fact: every email address and
# phone number in it is masked first, not only the consumer's own (SPEC §11).
_LOCAL_CHAR = r"[^\s@<>()\[\],;:\"]"
_EMAIL_LOCAL = re.compile(rf"(?<!{_LOCAL_CHAR}){_LOCAL_CHAR}++(?=@[\w.\-])")
"""The whole local part before an `@` that a domain follows (linear: runs start once)."""
_MASKED_LOCAL = re.compile(r"[^\d*]\*\*\*|\?")
"""A local part as `mask_text` leaves it: masking it again changes nothing."""
_NUMBER_SEP = r"[\s.\-/()\uff08\uff09\uff0e\uff0d]"
"""What may stand between the digits of a written number (up to three in a row)."""
_NUMBER = re.compile(rf"\d(?:{_NUMBER_SEP}{{0,3}}\d){{6,}}")
"""A run of at least seven digits: a phone number, or anything that may be one."""
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_KEPT = re.compile(
    rf"{_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)"  # IPv4: evidence names the client address
    r"|(?:19|20)[0-9][0-9]-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?!\d)"  # ISO date
)
_NOT_DIGIT = re.compile(r"\D")


def mask_text(text: str) -> str:
    """`text` with every email address and phone-number-like digit run masked.

    An email keeps the first character of its local part (`j***@example.com`; `?`
    when that is a digit or the local part is one character; a local part already
    written that way is left as it is) and its domain. Any
    run of at least seven digits, with up to three spaces, dots, dashes, slashes
    or parentheses between them, has its middle digits hidden as in `mask`
    (`+86138****8000`, `(01065****34`): other numbers and ids too, on purpose. A
    run that starts with an IPv4 address or an ISO date (`2024-05-01`) keeps that
    part. Masking a masked text changes nothing.
    """
    if "@" in text:
        text = _EMAIL_LOCAL.sub(_mask_local, text)
    return _NUMBER.sub(_mask_number, text)


def _mask_local(match: re.Match[str]) -> str:
    local = match.group(0)
    if _MASKED_LOCAL.fullmatch(local):
        return local
    if not local.strip("*"):
        return "?"  # as mask(): stars alone would show inside `?***`
    first = local[0]
    if len(local) == 1 or first == "*" or first.isdecimal():
        first = "?"  # a digit could join a digit run before it; `*` would read as a mask
    return f"{first}***"


def _mask_number(match: re.Match[str]) -> str:
    found = match.group(0)
    kept = _KEPT.match(found)
    if kept is None:
        return _hide_digits(_NOT_DIGIT.sub("", found))
    return kept.group(0) + _NUMBER.sub(_mask_number, found[kept.end() :])


@functools.lru_cache(maxsize=1024)
def _national_number(canonical: str) -> str:
    """The national significant number of an E.164 number (digits after the country code)."""
    try:
        return str(phonenumbers.national_significant_number(phonenumbers.parse(canonical, None)))
    except phonenumbers.NumberParseException:
        return canonical.lstrip("+")


def is_region(code: str) -> bool:
    """True when `code` is a region phonenumbers knows (e.g. CN, US, GB)."""
    return code in phonenumbers.SUPPORTED_REGIONS


def phone_time_zone(e164: str) -> str | None:
    """The one time zone (IANA name) phonenumbers places the number `e164` in:
    Asia/Shanghai for `+86`. None when it gives several (a US toll-free number
    gives them all, area code 208 two), none, or its `Etc/Unknown` placeholder,
    or when `e164` is not a number.

    A country that lies in one zone (+86, +81, +852 ...) answers from its
    calling code alone (phonenumbers' data puts every prefix of such a country
    in that zone): no parse, no cache that grows with a campaign's numbers.
    Any other number is looked up in full (some 20-30 µs: parse and number
    type), and cached."""
    digits = e164[1:] if e164.startswith("+") else e164
    for length in (1, 2, 3):  # calling codes are prefix-free
        code = digits[:length]
        if len(code) < length or not (code.isascii() and code.isdigit()):
            break
        if int(code) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            zone = _country_zone(code)
            return zone if zone is not None else _number_time_zone(e164)
    return _number_time_zone(e164)


@functools.cache
def _country_zone(calling_code: str) -> str | None:
    """The zone of a calling code whose whole country lies in one zone, else None."""
    zones = TIMEZONE_DATA.get(calling_code)  # the country's own entry: all its zones
    if zones is None or len(zones) != 1 or zones[0] == phone_zones.UNKNOWN_TIMEZONE:
        return None
    return str(zones[0])


@functools.lru_cache(maxsize=4096)
def _number_time_zone(e164: str) -> str | None:
    """phone_time_zone in full: parse the number, ask for its zones."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = phone_zones.time_zones_for_number(number)
    if len(zones) != 1 or zones[0] == phone_zones.UNKNOWN_TIMEZONE:
        return None
    return str(zones[0])
