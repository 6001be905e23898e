"""RAFT-style answering: retrieve Reddit threads for the question, then show a checked answer.

prepare()      finds documents for the newest question and rewrites that turn into the RAFT
               prompt (raft.build_user_message, exactly as the RAFT adapter was trained on);
               older turns stay plain text so the history does not fill up with documents.
               It also picks the evidence (chatbot.evidence: reply sentences ranked against
               the question) and says why, if so, there are no sources (PreparedTurn.notice).
display_while_streaming()
               the partial answer as it grows: quote markers become quotation marks, the
               <ANSWER>: tag disappears, and a marker still arriving (`##begin_qu`) is held back.
postprocess()  splits the generated text with raft.parse_answer, checks every quoted span
               against the retrieved documents, and renders markdown: the answer, "What
               travellers said" (extracted reply sentences, apart from the model's words), the
               quotes (marked when no document contains them) and the sources as links.

Everything shown comes from the model or from Reddit users, so it is HTML-escaped before it
goes into the markdown: a post containing <script> is displayed, never run.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from collections.abc import Sequence

from chatbot.evidence import EvidenceConfig, EvidenceSentence, extract_evidence
from corpus import thread_of_chunk
from raft import (
    ANSWER_TAG,
    BEGIN_QUOTE,
    DOCUMENTS_SYSTEM_NOTE,
    END_QUOTE,
    Document,
    QuoteCheck,
    build_user_message,
    check_quotes,
    parse_answer,
    quotes_verified,
    system_prompt_with_documents,
)

log = logging.getLogger(__name__)

UNTRUSTED_DOCUMENTS_NOTE = DOCUMENTS_SYSTEM_NOTE  # the same sentence RAFT training data carries
QUOTE_NOT_FOUND = "⚠ quote not found in the sources"
WITHHELD = "[system prompt withheld]"
EXTRAS_SEPARATOR = "\n\n---\n"  # what follows it in a displayed answer is ours, not the model's
QUOTES_HEADING = "**Quoted from the sources**"
SOURCES_HEADING = "**Sources**"
EVIDENCE_HEADING = "**What travellers said**"
EVIDENCE_NOTE = "*(sentences copied from Reddit replies, not written by the model)*"
NOTICE_HEADING = "ℹ️ **Reddit sources:**"
EXTRAS_HEADINGS = (NOTICE_HEADING, EVIDENCE_HEADING, QUOTES_HEADING, SOURCES_HEADING)
_STREAM_MARKERS = {BEGIN_QUOTE: "“", END_QUOTE: "”", ANSWER_TAG: "\n\n"}

_REDDIT_URL = re.compile(r"^https://(www\.|old\.)?reddit\.com/[^\s()<>\"'\\]*$")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#|~!])")


@dataclasses.dataclass(frozen=True)
class PreparedTurn:
    messages: list[dict]  # ready for engine.generate
    documents: list[Document]  # what the RAFT prompt holds (empty: a plain chat turn)
    notice: str = ""  # why retrieval was skipped or failed, for the UI
    evidence: tuple[EvidenceSentence, ...] = ()  # reply sentences answering the question, best first


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
    return document.permalink or thread_of_chunk(document.doc_id)


def source_line(document: Document) -> str:
    title = escape_markdown(_one_line(document.title) or document.doc_id)
    link = f"[{title}]({document.permalink})" if _REDDIT_URL.match(document.permalink) else title
    subreddit = f" · r/{escape_markdown(document.subreddit)}" if document.subreddit else ""
    return f"{link}{subreddit}"


def strip_display_extras(content: str) -> str:
    """An earlier displayed answer back to the model's words (notice, evidence, quotes and sources removed)."""
    head, separator, tail = content.rpartition(EXTRAS_SEPARATOR)
    if separator and tail.startswith(EXTRAS_HEADINGS):
        content = head
    return html.unescape(content)


def display_while_streaming(text: str, *, final: bool = False) -> str:
    """A partial answer as it may be shown (HTML-escaped): ##begin_quote## / ##end_quote## as
    quotation marks, <ANSWER>: as a paragraph break. Unless `final`, a tail that could still
    become a marker (`##begin_qu`, `<ANS`) is held back until the next piece decides."""
    # Complete markers first: the "##" closing one must not read as the start of the next.
    for marker, shown in _STREAM_MARKERS.items():
        text = text.replace(marker, shown)
    if not final:
        held = 0
        for marker in _STREAM_MARKERS:
            for length in range(len(marker) - 1, held, -1):
                if text.endswith(marker[:length]):
                    held = length
                    break
        if held:
            text = text[:-held]
    return escape_html(text)


def evidence_markdown(evidence: Sequence[EvidenceSentence]) -> str:
    """The "What travellers said" block: each sentence as a quote with its reply's score,
    subreddit, date and link. All of it is Reddit users' text, escaped."""
    lines = [f"{EVIDENCE_HEADING} {EVIDENCE_NOTE}"]
    for item in evidence:
        facts = []
        if item.reply_score is not None:
            facts.append(f"▲ {item.reply_score:,}")
        if item.subreddit:
            facts.append(f"r/{escape_markdown(item.subreddit)}")
        if item.date:
            facts.append(item.date)
        if _REDDIT_URL.match(item.permalink):
            facts.append(f"[{'reply' if item.reply_score is not None else 'thread'} on Reddit]({item.permalink})")
        lines.append(f"> “{escape_markdown(_one_line(item.text))}”  \n> — {' · '.join(facts)}")
    return "\n\n".join(lines)


class RagChat:
    """Retrieval-augmented turns for a ChatEngine; works without a retriever as plain chat."""

    def __init__(
        self,
        engine,
        retriever,
        top_k: int,
        *,
        followup_max_words: int,
        evidence: EvidenceConfig,
        unavailable_reason: str = "",
        subreddits: Sequence[str] = (),
    ):
        self.engine = engine
        self.retriever = retriever
        self.top_k = top_k
        self.followup_max_words = followup_max_words
        self.unavailable_reason = unavailable_reason if retriever is None else ""
        self.evidence_config = evidence
        self.subreddits = list(subreddits)  # what the destination filter offers (data.subreddits)

    @classmethod
    def from_settings(cls, engine, settings, *, retrieval: bool = True) -> "RagChat":
        """Open the index if it exists; without one, plain chat that says how to build it.
        `retrieval=False`: plain chat without opening the index (its options still configured)."""
        from retrieval import ChromaUnavailableError, EmbedderMismatchError, IndexMissingError, RetrievalConfig, Retriever
        from settings import ConfigError

        config = RetrievalConfig.from_settings(settings)
        options = {
            "followup_max_words": config.followup_max_words,
            "evidence": EvidenceConfig.from_settings(settings),
            "subreddits": settings.config.data.subreddits,
        }
        if not retrieval:
            return cls(engine, None, config.top_k, **options)
        try:
            retriever = Retriever.from_settings(settings)
        except (IndexMissingError, EmbedderMismatchError, ChromaUnavailableError, ConfigError) as err:
            log.warning("retrieval is off: %s", err)
            return cls(engine, None, config.top_k, unavailable_reason=str(err), **options)
        return cls(engine, retriever, config.top_k, **options)

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

    def _search_failed_notice(self, err: Exception) -> str:
        chroma = getattr(self.retriever.config, "chroma", None)
        if chroma is not None and chroma.mode == "http":
            return f"the Chroma server at {chroma.url} did not answer ({type(err).__name__}: {err}); answering without sources"
        return f"retrieval failed ({type(err).__name__}: {err}); answering without sources"

    def prepare(
        self,
        messages: Sequence[dict],
        use_retrieval: bool,
        *,
        subreddit: str | None = None,
        since: int | None = None,
    ) -> PreparedTurn:
        """Messages for engine.generate. Earlier answers lose the extras we appended; with
        documents, a system message (the engine's prompt + the untrusted-documents note) leads
        and the last user turn becomes the RAFT prompt. Without, the engine adds its own prompt.
        `subreddit` and `since` (seconds since the epoch) narrow the search."""
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
            reason = self.unavailable_reason or "retrieval is not configured"
            return PreparedTurn(turns, [], notice=f"{reason}; answering without sources")
        query = self.retrieval_query(turns)
        try:
            hits = self.retriever.search(query, k=self.top_k, subreddit=subreddit or None, since=since)
        except Exception as err:  # a broken index or a server gone away must not take the chat down
            log.exception("retrieval failed")
            return PreparedTurn(turns, [], notice=self._search_failed_notice(err))
        documents = [hit.to_document() for hit in hits]
        if not documents:
            filters = []
            if subreddit:
                filters.append(f"in r/{subreddit.strip().removeprefix('r/')}")
            if since is not None:
                filters.append("among recent threads")
            where = f" {' '.join(filters)}" if filters else ""
            floor = self.retriever.config.min_similarity
            return PreparedTurn(turns, [], notice=(
                f"no Reddit thread{where} scored above the similarity floor (retrieval.min_similarity = {floor:g}); "
                "answering without sources"
            ))
        try:
            evidence = tuple(extract_evidence(query, hits, self.retriever.embedder, self.evidence_config))
        except Exception:  # the answer does not depend on the evidence: never fail the turn for it
            log.exception("evidence extraction failed")
            evidence = ()
        turns[-1] = {"role": "user", "content": build_user_message(turns[-1]["content"], documents)}
        return PreparedTurn([{"role": "system", "content": self.system_prompt}, *turns], documents, evidence=evidence)

    def evidence_for(self, question: str, *, subreddit: str | None = None, since: int | None = None) -> tuple[EvidenceSentence, ...]:
        """The evidence for a question on its own (the arena shows it after the vote); () when
        retrieval is off, fails, or finds nothing."""
        if self.retriever is None or not question or not question.strip():
            return ()
        try:
            hits = self.retriever.search(question, k=self.top_k, subreddit=subreddit or None, since=since)
            return tuple(extract_evidence(question, hits, self.retriever.embedder, self.evidence_config))
        except Exception:
            log.exception("evidence lookup failed")
            return ()

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

    def postprocess(
        self,
        text: str,
        documents: Sequence[Document],
        evidence: Sequence[EvidenceSentence] = (),
        notice: str = "",
    ) -> RagAnswer:
        """The displayed answer: the model's words, then (after EXTRAS_SEPARATOR) the notice,
        the evidence, the checked quotes and the sources."""
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
        if notice:
            extras.append(f"{NOTICE_HEADING} {escape_markdown(_one_line(notice))}")
        if evidence:
            extras.append(evidence_markdown(evidence))
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
            quotes_verified=quotes_verified(checks),
            sources=sources,
        )
