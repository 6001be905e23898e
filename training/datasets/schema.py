"""The datasets' columns (datasets.Features) and the chat-message layout of their rows."""

from __future__ import annotations

# Raised whenever what a row holds changes with the same settings, so that the pipeline rebuilds
# the datasets (and retrains what learnt from them). 2: preference answers in the RAFT format.
DATASET_FORMAT = 2


def chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def features():
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    return {
        "sft": Features({"messages": message, "thread_id": Value("string")}),
        "raft": Features({
            "messages": message, "thread_id": Value("string"), "oracle_included": Value("bool"),
            "oracle_doc_id": Value("string"), "doc_ids": [Value("string")],
            "distractor_source": Value("string"), "idk": Value("bool"),
        }),
        "preference": Features({"prompt": message, "chosen": message, "rejected": message,
                                "thread_id": Value("string"), "doc_ids": [Value("string")]}),
        "golden": Features({
            "thread_id": Value("string"), "question": Value("string"), "reference_answer": Value("string"),
            "subreddit": Value("string"), "permalink": Value("string"),
        }),
    }
