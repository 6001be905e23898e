"""Small text helpers shared by every package (no heavy imports: training, evaluation, the
chatbot and retrieval all use them).

    split_sentences(text)  the one sentence splitter of the tree
    clip(text, max_chars)  the one text clip (word or sentence boundary, an ellipsis for a cut)
"""

from textutils.clip import clip
from textutils.sentences import split_sentences

__all__ = ["clip", "split_sentences"]
