"""Reddit text made readable: HTML entities, markdown, URLs and personal data.

Pure functions on strings, used by cleaning (threads) and anywhere text from Reddit is shown.

Markdown is parsed by markdown-it-py (CommonMark, plus GFM tables and strikethrough) and its
token stream is walked to plain text. A real parser replaces a chain of ~20 hand-written regexes
that could not know nesting, where a code span or fence ends, every backslash escape, setext
headings or reference links, and that had to run in a fragile order.
Only Reddit's own syntax, unknown to CommonMark, keeps a regex: spoilers `>!…!<` (replaced before
parsing, since a line-start `>` would read as a block quote), superscripts `^word` and `^(…)`,
and bare URLs (markdown-it's linkify needs linkify-it-py, which Wayfarer does not install). The
last two are applied to text tokens only, so code spans and escaped characters keep them.
The personal-data scrubbing (u/ mentions, e-mail, phone numbers) runs on the finished text.

Phone detection is deliberately conservative so prices, dates, times, years, number ranges and
flight numbers survive: a number needs a + or 00 prefix, or 9 to 12 digits split into groups
that do not read as a year list, a date or a thousands-separated amount.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from textutils import clip

_MAX_UNESCAPE_ROUNDS = 5

_ZERO_WIDTH_RE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\u00ad]")
_PLACEHOLDER_BASE = 0xE000  # private-use code points hold escaped characters while Reddit syntax is read
_PLACEHOLDER_RE = re.compile("[\ue000-\ue07f]")
# HTML tags that survive unescaping (e.g. "&amp;lt;b&amp;gt;"); "<3" and "< 5 min" are not tags.
_HTML_BREAK_RE = re.compile(r"<br\s*/?>|</?p\s*>", re.I)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")
# Reddit-only syntax, unknown to CommonMark.
_SPOILER_RE = re.compile(r"(?<!\\)>!(.+?)(?<!\\)!<", re.S)
_SUPERSCRIPT_PAREN_RE = re.compile(r"\^\(([^)]*)\)")
_SUPERSCRIPT_RE = re.compile(r"\^+(?=\S)")
_BARE_URL_RE = re.compile(r"(?<![\w@/])(?:https?://|www\.)[^\s<>()\[\]\"']+", re.I)
# Personal data.
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


class _PlainTextMarkdown(MarkdownIt):
    """CommonMark with GFM tables and strikethrough, set up to be read as text, not rendered."""

    def __init__(self) -> None:
        # html off: clean_text has already stripped real tags, so a leftover "<" is just text.
        super().__init__("commonmark", {"html": False})
        self.enable(["table", "strikethrough"])
        # Escapes stay separate tokens, so "\^" or "\_" in a URL is never read as Reddit syntax.
        self.disable("text_join")

    def normalizeLink(self, url: str) -> str:  # noqa: N802 (markdown-it's name)
        # Nothing is rendered to HTML: keep the target as written (no punycode, no %-encoding)
        # so url_domain shows "café.fr", not "xn--caf-dma.fr".
        return url


_MARKDOWN = _PlainTextMarkdown()


def _link_text(label: str, url: str) -> str:
    """A link as a reader needs it: "label (domain)", the domain alone for a bare URL."""
    label, url = label.strip(), url.strip()
    if url.lower().startswith("mailto:"):
        return label or url[len("mailto:"):]
    domain = url_domain(url)
    if not label or label == url or url_domain(label) == domain and "." in label:
        return domain or label
    label = _BARE_URL_RE.sub(_bare_url_replacement, label)
    return f"{label} ({domain})" if domain else label


def _bare_url_replacement(match: re.Match) -> str:
    url = match.group(0)
    trailing = re.search(r"[.,;:!?'\"]+$", url)
    tail = trailing.group(0) if trailing else ""
    url = url[: len(url) - len(tail)]
    return (url_domain(url) or url) + tail


def _mask(literal: str) -> str:
    return "".join(chr(_PLACEHOLDER_BASE + ord(c)) if ord(c) < 0x80 else c for c in literal)


def _reddit_inline(masked: str, bare_urls: bool) -> str:
    """Reddit's own inline syntax in a run of text; escaped characters arrive masked."""
    if bare_urls:
        masked = _BARE_URL_RE.sub(_bare_url_replacement, masked)
    masked = _SUPERSCRIPT_PAREN_RE.sub(r"\1", masked)
    masked = _SUPERSCRIPT_RE.sub("", masked)
    return _PLACEHOLDER_RE.sub(lambda m: chr(ord(m.group(0)) - _PLACEHOLDER_BASE), masked)


def _inline_text(tokens: list[Token], in_link: bool = False) -> str:
    """An inline token stream as plain text: markup dropped, links as _link_text, ~~struck~~ gone."""
    pieces: list[str] = []
    run: list[str] = []  # consecutive text, read for Reddit syntax as one string

    def flush() -> None:
        if run:
            pieces.append(_reddit_inline("".join(run), bare_urls=not in_link))
            run.clear()

    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "text":
            run.append(token.content)
        elif token.type == "text_special":  # a backslash escape or an entity: always literal
            run.append(_mask(token.content))
        elif token.type in ("softbreak", "hardbreak"):
            run.append("\n")
        elif token.type == "code_inline":
            flush()
            pieces.append(token.content)
        elif token.type == "link_open":  # links do not nest, so the next link_close is its own
            close = next(j for j in range(i + 1, len(tokens)) if tokens[j].type == "link_close")
            flush()
            label = _inline_text(tokens[i + 1 : close], in_link=True)
            pieces.append(_link_text(label, str(token.attrGet("href") or "")))
            i = close
        elif token.type == "image":  # its alt text is its children
            flush()
            label = _inline_text(token.children or [], in_link=True)
            pieces.append(_link_text(label, str(token.attrGet("src") or "")))
        elif token.type == "s_open":  # struck-out text is retracted: drop it (nesting counted)
            depth = 1
            while depth and i + 1 < len(tokens):
                i += 1
                depth += {"s_open": 1, "s_close": -1}.get(tokens[i].type, 0)
        # em/strong open and close are markup only
        i += 1
    flush()
    return "".join(pieces)


def strip_markdown(text: str) -> str:
    """Reddit markdown -> plain readable text (links keep their text and domain).

    Each leaf block (paragraph, heading, code, table row) becomes text. Blocks are joined by a
    blank line where the source had one and by a line break otherwise, so the layout survives.
    """
    tokens = _MARKDOWN.parse(_SPOILER_RE.sub(r"\1", text))
    blocks: list[tuple[str, int, int]] = []  # (text, first source line, line after it)
    marker = ""  # a list item's "- " or "3. ", waiting for the item's first block
    row: list[str] | None = None  # cells of the table row being read
    row_lines = (0, 0)
    for index, token in enumerate(tokens):
        lines = token.map or (0, 0)  # block tokens always carry their source lines
        if token.type == "list_item_open":
            marker = "- " if token.markup in "-*+" else f"{token.info}{token.markup} "
        elif token.type == "tr_open":
            header = tokens[index - 1].type == "thead_open"  # it reaches over the |---| row below
            row, row_lines = [], (lines[0], lines[1] + header)
        elif token.type == "inline" and row is not None:
            row.append(_inline_text(token.children or []).strip())
        elif token.type == "tr_close" and row is not None:
            blocks.append((marker + ", ".join(cell for cell in row if cell), *row_lines))
            row, marker = None, ""
        elif token.type == "inline":  # its opener's lines include a setext heading's "===" row
            opener_lines = tokens[index - 1].map or lines
            blocks.append((marker + _inline_text(token.children or []), *opener_lines))
            marker = ""
        elif token.type in ("fence", "code_block"):
            blocks.append((marker + token.content.rstrip("\n"), *lines))
            marker = ""
        # other openers/closers and horizontal rules carry no text of their own
    parts: list[str] = []
    previous_end = 0
    for content, first, after in blocks:
        if not content.strip():  # e.g. a paragraph that was all ~~struck~~
            continue
        if parts:
            parts.append("\n\n" if first > previous_end else "\n")
        parts.append(content)
        previous_end = after
    return "".join(parts)


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
    return clip(text, max_chars) if max_chars else text


def clean_title(raw: Any, max_chars: int) -> str:
    return " ".join(clean_text(raw, max_chars).split())


def content_key(*texts: str) -> str:
    """Normalised text for duplicate detection: case, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w]+", " ", " ".join(texts).lower()).split())
