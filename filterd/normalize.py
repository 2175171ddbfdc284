"""Raw recipient text → a normalised `Address`, and masking for logs.

Phone numbers become E.164 through `phonenumbers` (national numbers read with
the configured default region). Numbers already written in E.164 take a fast
path that checks the same metadata patterns `phonenumbers.is_valid_number`
checks, without building a PhoneNumber object; anything the fast path is not
sure of goes the slow way, so both paths agree (a property test holds them to
it). Emails are trimmed, the domain IDNA-encoded, the whole address
lower-cased.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata

from filterd.errors import InvalidAddress
from filterd.model import Address, Channel

_PHONE_CHARS = re.compile(r"^\+?[0-9 ().\-]+$")
_SEPARATORS = str.maketrans("", "", " ().-")
_E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LOCAL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f\"(),:;<>@\[\\\]]")
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


def normalize(raw: str, default_region: str | None = None) -> Address:
    """Return the canonical Address for `raw`, or raise InvalidAddress naming it."""
    if channel_of(raw) is Channel.EMAIL:
        return Address(normalize_email(raw), Channel.EMAIL)
    return Address(normalize_phone(raw, default_region), Channel.SMS)


def normalize_email(raw: str) -> str:
    """Canonical email: trimmed, IDNA domain, whole address lower-cased."""
    text = raw.strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not local:
        raise InvalidAddress(raw, "an email address needs a local part and a domain")
    if len(local.encode()) > 64:
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
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidAddress(raw, f"the domain is not a valid IDNA name ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidAddress(raw, "the domain needs at least two labels")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidAddress(raw, "the domain is not a valid host name")
    return ascii_name


def normalize_phone(raw: str, default_region: str | None) -> str:
    """E.164 for `raw`; national numbers need `default_region`."""
    text = raw.strip()
    if not text or not _PHONE_CHARS.match(text):
        raise InvalidAddress(raw, "a phone number has only digits, '+' and separators")
    compact = text.translate(_SEPARATORS)
    if _E164.match(compact) and _fast_valid_e164(compact):
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


def _fast_valid_e164(compact: str) -> bool:
    """True only when `+CC NSN` is surely valid and already canonical."""
    digits = compact[1:]
    for length in (1, 2, 3):
        checks = _country_checks(int(digits[:length]))
        if checks is not None:
            nsn = digits[length:]
            return any(rule.valid(nsn) for rule in checks)
    return False


@dataclass(frozen=True, slots=True)
class _RegionRule:
    """One region's validity patterns, compiled once."""

    strip: re.Pattern[str] | None
    general: tuple[frozenset[int], re.Pattern[str]] | None
    types: tuple[tuple[frozenset[int], re.Pattern[str]], ...]

    def valid(self, nsn: str) -> bool:
        if self.strip is not None and self.strip.match(nsn):
            return False  # parse() might strip a prefix here: let the slow path decide
        if self.general is None or not _fits(self.general, nsn):
            return False
        return any(_fits(rule, nsn) for rule in self.types)


def _fits(rule: tuple[frozenset[int], re.Pattern[str]], nsn: str) -> bool:
    lengths, pattern = rule
    return (not lengths or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


def _desc_rule(desc: object) -> tuple[frozenset[int], re.Pattern[str]] | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if desc is None or pattern is None:
        return None
    return frozenset(getattr(desc, "possible_length", ()) or ()), re.compile(pattern)


@functools.cache
def _country_checks(country_code: int) -> tuple[_RegionRule, ...] | None:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return None
    rules = []
    for region in regions:
        if region == "001":
            meta = PhoneMetadata.metadata_for_nongeo_region(country_code)
        else:
            meta = PhoneMetadata.metadata_for_region(region)
        if meta is None:
            continue
        strip = meta.national_prefix_for_parsing
        types = (_desc_rule(getattr(meta, name)) for name in _TYPE_DESCS)
        rules.append(
            _RegionRule(
                strip=re.compile(strip) if strip else None,
                general=_desc_rule(meta.general_desc),
                types=tuple(rule for rule in types if rule is not None),
            )
        )
    return tuple(rules)


def mask(canonical: str) -> str:
    """A log-safe form: `+86138****8000`, `j***@example.com`."""
    if "@" in canonical:
        local, _, domain = canonical.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(canonical) >= 11:
        return f"{canonical[:6]}****{canonical[-4:]}"
    return f"{canonical[:3]}****{canonical[-2:]}"


def is_region(code: str) -> bool:
    """True when `code` is a region phonenumbers knows (e.g. CN, US, GB)."""
    return code in phonenumbers.SUPPORTED_REGIONS
