"""Reddit text made readable: HTML entities, markdown, URLs and personal data.

Pure functions on strings, used by cleaning (threads) and anywhere text from Reddit is shown.
Phone detection is deliberately conservative so prices, dates, times, years, number ranges and
flight numbers survive: a number needs a + or 00 prefix, or 9 to 12 digits split into groups
that do not read as a year list, a date or a thousands-separated amount.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

_MAX_UNESCAPE_ROUNDS = 5

_ZERO_WIDTH_RE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_ESCAPABLE = "\\`*_{}[]()#+-.!|~^>"
_ESCAPE_RE = re.compile(r"\\([" + re.escape(_ESCAPABLE) + r"])")
_PLACEHOLDER_BASE = 0xE000  # private-use code points hold escaped characters during markdown work
# HTML tags that survive unescaping (e.g. "&amp;lt;b&amp;gt;"); "<3" and "< 5 min" are not tags.
_HTML_BREAK_RE = re.compile(r"<br\s*/?>|</?p\s*>", re.I)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")
_CODE_FENCE_RE = re.compile(r"^\s*(```|~~~).*$", re.M)
_LINK_RE = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?(?:\s+\"[^\"]*\")?\s*\)")
_BARE_URL_RE = re.compile(r"(?<![\w@/])(?:https?://|www\.)[^\s<>()\[\]\"']+", re.I)
_HEADER_RE = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*(.*?)[ \t]*#*[ \t]*$", re.M)
_RULE_RE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.M)
_TABLE_SEPARATOR_RE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)+\|?[ \t]*(?:\n|$)", re.M)
_SPOILER_RE = re.compile(r">!(.+?)!<", re.S)
_QUOTE_RE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.M)
_STRIKE_RE = re.compile(r"~~(.+?)~~", re.S)
_SUPERSCRIPT_PAREN_RE = re.compile(r"\^\(([^)]*)\)")
_SUPERSCRIPT_RE = re.compile(r"\^+(?=\S)")
_STRONG_RE = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_EMPHASIS_STAR_RE = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_EMPHASIS_UNDERSCORE_RE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_INLINE_CODE_RE = re.compile(r"`+([^`\n]+?)`+")
_BULLET_RE = re.compile(r"^[ \t]*[*+•][ \t]+", re.M)
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_USER_RE = re.compile(r"(?<![\w/])/?(?:u|user)/[A-Za-z0-9_-]{2,}", re.I)
_PHONE_RE = re.compile(
    r"""
    (?<![\w$€£¥₩₫฿+@/.,:'-])                 # not inside a word, price, URL, decimal, time or range
    (?P<phone>
      (?:\+[ ]?|00)?                        # international prefix
      (?:\(\d{1,4}\)|\d{1,5})               # first group, maybe a bracketed area code
      (?:[ .\-\u00a0]?(?:\(\d{1,4}\)|\d{1,5})){1,5}
    )
    (?![\w$€£¥%]|[.,:/-]?\d)                # not followed by more of a number or a unit
    """,
    re.X,
)
_AMOUNT_AFTER_RE = re.compile(
    r"\s*(?:yen|jpy|usd|eur|euros?|gbp|vnd|dong|đ|won|krw|baht|thb|pesos?|mxn|dollars?|k\b|km|kms|miles?|"
    r"points|pts|avios|miles|steps|people|visitors)",
    re.I,
)
_YEAR_RE = re.compile(r"(?:19|20)\d\d")
_DATE_START_RE = re.compile(r"(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])\b")
_CURRENCY_BEFORE_RE = re.compile(r"[$€£¥₩₫฿]\s?$|(?:usd|eur|jpy|vnd|thb|krw|gbp|mxn|rs\.?)\s?$", re.I)


def unescape_html(text: str) -> str:
    """Undo HTML entities, repeatedly: dumps often carry "&amp;amp;" (escaped twice)."""
    for _ in range(_MAX_UNESCAPE_ROUNDS):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return text


def url_domain(url: str) -> str:
    """"https://www.japan-guide.com/e/e2020.html" -> "japan-guide.com"; reddit paths -> "r/sub"."""
    url = url.strip()
    relative = re.match(r"^/?((?:r|u|user)/[A-Za-z0-9_-]+)", url)
    if relative:
        return relative.group(1)
    try:
        host = urlsplit(url if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I) else "http://" + url).hostname
    except ValueError:
        host = None
    if not host:
        return ""
    return re.sub(r"^(?:www\d?|m|old|new|amp)\.", "", host.lower())


def _link_replacement(match: re.Match) -> str:
    text, url = match.group(1).strip(), match.group(2).strip()
    if url.lower().startswith("mailto:"):
        return text or url[len("mailto:"):]
    domain = url_domain(url)
    if not text or text == url or url_domain(text) == domain and "." in text:
        return domain or text
    return f"{text} ({domain})" if domain else text


def _bare_url_replacement(match: re.Match) -> str:
    url = match.group(0)
    trailing = re.search(r"[.,;:!?'\"]+$", url)
    tail = trailing.group(0) if trailing else ""
    url = url[: len(url) - len(tail)]
    return (url_domain(url) or url) + tail


def _protect_escapes(text: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(_PLACEHOLDER_BASE + ord(m.group(1))), text)


def _restore_escapes(text: str) -> str:
    return re.sub("[\ue000-\ue07f]", lambda m: chr(ord(m.group(0)) - _PLACEHOLDER_BASE), text)


def _table_row(line: str) -> str:
    if line.count("|") < 2 and not line.strip().startswith("|"):
        return line
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return ", ".join(cell for cell in cells if cell)


def strip_markdown(text: str) -> str:
    """Reddit markdown -> plain readable text (links keep their text and domain)."""
    text = _protect_escapes(text)
    text = _CODE_FENCE_RE.sub("", text)
    text = _LINK_RE.sub(_link_replacement, text)
    text = _BARE_URL_RE.sub(_bare_url_replacement, text)
    text = _TABLE_SEPARATOR_RE.sub("", text)
    text = "\n".join(_table_row(line) for line in text.split("\n"))
    text = _RULE_RE.sub("", text)
    text = _HEADER_RE.sub(r"\1", text)
    text = _SPOILER_RE.sub(r"\1", text)
    text = _QUOTE_RE.sub("", text)
    text = _STRIKE_RE.sub("", text)
    text = _SUPERSCRIPT_PAREN_RE.sub(r"\1", text)
    text = _SUPERSCRIPT_RE.sub("", text)
    text = _INLINE_CODE_RE.sub(r"\1", text)
    text = _STRONG_RE.sub(r"\2", text)
    text = _EMPHASIS_STAR_RE.sub(r"\1", text)
    text = _EMPHASIS_UNDERSCORE_RE.sub(r"\1", text)
    text = _BULLET_RE.sub("- ", text)
    return _restore_escapes(text)


def _is_phone(number: str, before: str, after: str) -> bool:
    digits = re.sub(r"\D", "", number)
    groups = [g for g in re.split(r"[^\d]+", number) if g]
    if number.startswith(("+", "00")):
        return 8 <= len(digits) <= 15
    if len(groups) < 2 or not 9 <= len(digits) <= 12:
        return False
    if all(_YEAR_RE.fullmatch(g) for g in groups):  # "2018 2019 2020"
        return False
    if _DATE_START_RE.match(number):  # "2023-10-15 1430"
        return False
    separators = set(re.findall(r"[^\d()]", number))
    if len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]) and separators <= {" ", ".", "\u00a0"}:
        return False  # "100 000 000" or "1.500.000": a thousands-separated amount
    if _CURRENCY_BEFORE_RE.search(before) or _AMOUNT_AFTER_RE.match(after):
        return False
    return True


def scrub_personal_data(text: str) -> str:
    """u/name -> "a user", e-mail -> "[email]", phone number -> "[phone]"."""
    text = _EMAIL_RE.sub("[email]", text)
    text = _USER_RE.sub("a user", text)

    def phone(match: re.Match) -> str:
        before = text[max(0, match.start() - 6) : match.start()]
        after = text[match.end() : match.end() + 12]
        return "[phone]" if _is_phone(match.group("phone"), before, after) else match.group(0)

    return _PHONE_RE.sub(phone, text)


def normalise_whitespace(text: str) -> str:
    text = text.replace("\u00a0", " ").replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def truncate(text: str, max_chars: int) -> str:
    """Cut at a word boundary and mark the cut with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    if " " in cut[max_chars // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


def clean_text(raw: Any, max_chars: int | None = None) -> str:
    """Raw Reddit text -> readable plain text with personal data scrubbed."""
    if not isinstance(raw, str):
        return ""
    text = unescape_html(raw)
    text = _ZERO_WIDTH_RE.sub("", text)
    text = _HTML_TAG_RE.sub("", _HTML_BREAK_RE.sub("\n", text))
    text = strip_markdown(text)
    text = scrub_personal_data(text)
    text = normalise_whitespace(text)
    return truncate(text, max_chars) if max_chars else text


def clean_title(raw: Any, max_chars: int) -> str:
    return " ".join(clean_text(raw, max_chars).split())


def content_key(*texts: str) -> str:
    """Normalised text for duplicate detection: case, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w]+", " ", " ".join(texts).lower()).split())
