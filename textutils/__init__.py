"""Small text helpers shared by every package (no heavy imports: training, evaluation, the
chatbot and retrieval all use them).

    split_sentences(text)  the one sentence splitter of the tree
"""

from textutils.sentences import split_sentences

__all__ = ["split_sentences"]
