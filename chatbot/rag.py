"""RAFT-style answering: retrieve Reddit threads for the question, then show a checked answer.

prepare()      finds documents for the newest question and rewrites that turn into the RAFT
               prompt (raft.build_user_message, exactly as the RAFT adapter was trained on);
               older turns stay plain text so the history does not fill up with documents.
postprocess()  splits the generated text with raft.parse_answer, checks every quoted span
               against the retrieved documents, and renders markdown: the answer, the quotes
               (marked when no document contains them) and the sources as links.

Everything shown comes from the model or from Reddit users, so it is HTML-escaped before it
goes into the markdown: a post containing <script> is displayed, never run.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections.abc import Sequence

from raft import (
    DOCUMENTS_SYSTEM_NOTE,
    Document,
    QuoteCheck,
    build_user_message,
    check_quotes,
    parse_answer,
    system_prompt_with_documents,
)

log = logging.getLogger(__name__)

UNTRUSTED_DOCUMENTS_NOTE = DOCUMENTS_SYSTEM_NOTE  # the same sentence RAFT training data carries
QUOTE_NOT_FOUND = "⚠ quote not found in the sources"
WITHHELD = "[system prompt withheld]"
EXTRAS_SEPARATOR = "\n\n---\n"  # what follows it in a displayed answer is ours, not the model's
QUOTES_HEADING = "**Quoted from the sources**"
SOURCES_HEADING = "**Sources**"

_REDDIT_URL = re.compile(r"^https://(www\.|old\.)?reddit\.com/[^\s()<>\"'\\]*$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#|~!])")


@dataclasses.dataclass(frozen=True)
class PreparedTurn:
    messages: list[dict]  # ready for engine.generate
    documents: list[Document]  # what the RAFT prompt holds (empty: a plain chat turn)
    notice: str = ""  # why retrieval was skipped or failed, for the UI


@dataclasses.dataclass(frozen=True)
class RagAnswer:
    display_markdown: str
    answer: str  # the final answer, markers removed (raw text, not escaped)
    quotes: list[QuoteCheck]
    quotes_verified: bool  # at least one quote, and every quote appears in a retrieved document
    sources: list[Document]  # retrieved documents, one per thread, in prompt order


def escape_html(text: str) -> str:
    return html.escape(text, quote=False)


def escape_markdown(text: str) -> str:
    """Literal text inside markdown: no formatting, no links, no HTML."""
    return escape_html(_MARKDOWN_SPECIAL.sub(r"\\\1", text))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _thread_key(document: Document) -> str:
    return document.permalink or document.doc_id.rsplit("-", 1)[0]


def source_line(document: Document) -> str:
    title = escape_markdown(_one_line(document.title) or document.doc_id)
    link = f"[{title}]({document.permalink})" if _REDDIT_URL.match(document.permalink) else title
    subreddit = f" · r/{escape_markdown(document.subreddit)}" if document.subreddit else ""
    return f"{link}{subreddit}"


def strip_display_extras(content: str) -> str:
    """An earlier displayed answer back to the model's words (quotes and sources removed)."""
    head, separator, tail = content.rpartition(EXTRAS_SEPARATOR)
    if separator and tail.startswith((QUOTES_HEADING, SOURCES_HEADING)):
        content = head
    return html.unescape(content)


class RagChat:
    """Retrieval-augmented turns for a ChatEngine; works without a retriever as plain chat."""

    def __init__(self, engine, retriever=None, top_k: int = 4, *, followup_max_words: int = 6, unavailable_reason: str = ""):
        self.engine = engine
        self.retriever = retriever
        self.top_k = top_k
        self.followup_max_words = followup_max_words
        self.unavailable_reason = unavailable_reason if retriever is None else ""

    @classmethod
    def from_settings(cls, engine, settings) -> "RagChat":
        """Open the index if it exists; without one, plain chat that says how to build it."""
        from retrieval import ChromaUnavailableError, EmbedderMismatchError, IndexMissingError, RetrievalConfig, Retriever
        from settings import ConfigError

        config = RetrievalConfig.from_settings(settings)
        try:
            retriever = Retriever.from_settings(settings)
        except (IndexMissingError, EmbedderMismatchError, ChromaUnavailableError, ConfigError) as err:
            log.warning("retrieval is off: %s", err)
            return cls(engine, None, config.top_k, followup_max_words=config.followup_max_words, unavailable_reason=str(err))
        return cls(engine, retriever, config.top_k, followup_max_words=config.followup_max_words)

    @property
    def retrieval_available(self) -> bool:
        return self.retriever is not None

    @property
    def system_prompt(self) -> str:
        return system_prompt_with_documents(self.engine.system_prompt)

    def retrieval_query(self, messages: Sequence[dict]) -> str:
        """The newest question; a short follow-up ("and in winter?") takes the previous one along."""
        questions = [m["content"] for m in messages if m.get("role") == "user"]
        if not questions:
            return ""
        query = questions[-1].strip()
        if len(questions) > 1 and len(query.split()) <= self.followup_max_words:
            query = f"{questions[-2].strip()} {query}"
        return query

    def prepare(self, messages: Sequence[dict], use_retrieval: bool) -> PreparedTurn:
        """Messages for engine.generate. Earlier answers lose the quotes/sources we appended; with
        documents, a system message (the engine's prompt + the untrusted-documents note) leads
        and the last user turn becomes the RAFT prompt. Without, the engine adds its own prompt."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("the conversation must end with a user message")
        turns = [
            {"role": m["role"], "content": strip_display_extras(m["content"]) if m["role"] == "assistant" else m["content"]}
            for m in messages
            if m.get("role") in ("user", "assistant")
        ]
        if not use_retrieval:
            return PreparedTurn(turns, [])
        if self.retriever is None:
            return PreparedTurn(turns, [], notice=self.unavailable_reason or "retrieval is not configured")
        try:
            hits = self.retriever.search(self.retrieval_query(turns), k=self.top_k)
        except Exception as err:  # a broken index must not take the chat down with it
            log.exception("retrieval failed")
            return PreparedTurn(turns, [], notice=f"retrieval failed ({err}); answering without sources")
        documents = [hit.to_document() for hit in hits]
        if not documents:
            return PreparedTurn(turns, [], notice="no matching Reddit threads; answering without sources")
        turns[-1] = {"role": "user", "content": build_user_message(turns[-1]["content"], documents)}
        return PreparedTurn([{"role": "system", "content": self.system_prompt}, *turns], documents)

    def _withhold_system_prompt(self, text: str) -> str:
        """Replace any sentence of the system prompt the model repeats (a planted instruction may ask it to)."""
        sentences = re.split(r"(?<=[.!?])\s+", self.system_prompt)
        for sentence in sentences:
            words = sentence.split()
            if len(words) < 5:
                continue
            pattern = r"\s+".join(re.escape(word) for word in words)
            text = re.sub(pattern, WITHHELD, text, flags=re.IGNORECASE)
        return text

    def postprocess(self, text: str, documents: Sequence[Document]) -> RagAnswer:
        text = self._withhold_system_prompt(text)
        parsed = parse_answer(text)
        if not documents and not parsed.quotes and not parsed.has_answer_tag:
            # Plain chat: keep the model's own layout (parse_answer squeezes spaces).
            parsed = dataclasses.replace(parsed, answer=text.strip())
        checks = check_quotes(parsed.quotes, documents)
        sources: list[Document] = []
        number_of: dict[str, int] = {}
        for document in documents:
            key = _thread_key(document)
            if key not in number_of:
                sources.append(document)
                number_of[key] = len(sources)
        by_id = {document.doc_id: document for document in documents}

        extras = []
        if checks:
            lines = [QUOTES_HEADING]
            for check in checks:
                quote = f"> “{escape_markdown(_one_line(check.quote))}”"
                if check.found:
                    quote += f" [{number_of[_thread_key(by_id[check.doc_id])]}]"
                else:
                    quote += f" {QUOTE_NOT_FOUND}"
                lines.append(quote)
            extras.append("\n\n".join(lines))
        if sources:
            extras.append(SOURCES_HEADING + "\n\n" + "\n".join(f"{n}. {source_line(d)}" for n, d in enumerate(sources, 1)))
        display = escape_html(parsed.answer) if parsed.answer else "*(no answer)*"
        if extras:
            display += EXTRAS_SEPARATOR + "\n\n".join(extras)
        return RagAnswer(
            display_markdown=display,
            answer=parsed.answer,
            quotes=checks,
            quotes_verified=bool(checks) and all(check.found for check in checks),
            sources=sources,
        )
