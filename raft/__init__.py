"""The RAFT prompt and answer format, shared by training data and the chatbot.

RAFT (arXiv 2403.10131) trains a model to answer from documents placed in its prompt, quoting
the sentences it relies on. The training examples and the live chatbot must lay the documents
out identically, or the fine-tuned adapter sees a prompt it was never trained on; so both build
it here and nowhere else.
"""

from raft.format import (
    ANSWER_TAG,
    BEGIN_QUOTE,
    DOCUMENTS_SYSTEM_NOTE,
    END_QUOTE,
    Document,
    QuoteCheck,
    RaftAnswer,
    build_cot_answer,
    build_user_message,
    check_quotes,
    has_documents,
    order_documents,
    parse_answer,
    quotes_verified,
    system_prompt_with_documents,
)

__all__ = [
    "ANSWER_TAG",
    "BEGIN_QUOTE",
    "DOCUMENTS_SYSTEM_NOTE",
    "END_QUOTE",
    "Document",
    "QuoteCheck",
    "RaftAnswer",
    "build_cot_answer",
    "build_user_message",
    "check_quotes",
    "has_documents",
    "order_documents",
    "parse_answer",
    "quotes_verified",
    "system_prompt_with_documents",
]
