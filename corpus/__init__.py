"""The corpus: what a cleaned Reddit thread reads as, how it is cut into chunk ids, and which
threads are held out (golden). Retrieval (the index) and training (the datasets) both use it, so
an indexed chunk and a RAFT document of the same thread are the same text with the same id.

    thread_document_text(title, body, comments)  the thread as indexed, retrieved and quoted
    reply_spans(text, comments)                  where each reply lies in that text
    chunk_thread(thread, chunker) -> [(id, text)] chunk n of thread t has id "t-n"
    thread_of_chunk(chunk_id)                    the thread a chunk id belongs to
    load_golden_thread_ids / save_golden_thread_ids    datasets/golden_thread_ids.json
    load_threads(path) / threads_exist(path)     the cleaned threads dataset (paths.threads)

No heavy imports: training, retrieval and the chatbot import it at start-up.
"""

from corpus.chunks import chunk_id, chunk_thread, thread_of_chunk
from corpus.golden import GOLDEN_IDS_FILE, golden_ids_json, load_golden_thread_ids, save_golden_thread_ids
from corpus.threads import THREAD_COLUMNS, ThreadsMissingError, load_threads, threads_exist
from corpus.text import REPLY_PREFIX, reply_spans, thread_document_text

__all__ = [
    "GOLDEN_IDS_FILE",
    "REPLY_PREFIX",
    "THREAD_COLUMNS",
    "ThreadsMissingError",
    "chunk_id",
    "chunk_thread",
    "golden_ids_json",
    "load_golden_thread_ids",
    "load_threads",
    "reply_spans",
    "thread_document_text",
    "thread_of_chunk",
    "threads_exist",
    "save_golden_thread_ids",
]
