"""The Reddit-preference stage of a run: every metric and the judge on the pairs of replies of
the golden threads (evaluation.reddit_preference builds the pairs), cached like the answers."""

from __future__ import annotations

import dataclasses

from evaluation.cache import scorer_fingerprint, text_hash
from evaluation.config import PAIRWISE, SINGLE
from evaluation.judge import JudgeError, PairwiseItem, grading_prompt, judge_grades, judge_pairwise
from evaluation.metrics import golden_metrics
from evaluation.rag_metrics import answer_relevance, faithfulness
from evaluation.reddit_preference import OTHER, UPVOTED, build_pairs


def score_reddit_preference(settings, config, rag, judge, cache, golden, stats, report) -> dict:
    """Every metric and the judge on the Reddit-preference pairs: the raw per-pair values (the
    report turns them into agreement shares with intervals)."""
    from evaluation.encoder import TextEncoder

    section: dict = {"enabled": config.reddit_preference.enabled, "min_score_ratio": config.reddit_preference.min_score_ratio,
                     "pairs": [], "note": "", "retrieval": bool(rag.retrieval_available), "judged_pairs": 0,
                     "judge_error": None}
    if not config.reddit_preference.enabled:
        section["note"] = "off (evaluation.reddit_preference.enabled: false)"
        return section
    pairs, section["note"] = build_pairs(settings, config.reddit_preference, {q.question_id: q.question for q in golden})
    stats.reddit_pairs = len(pairs)
    if not pairs:
        return section
    encoder = TextEncoder.shared(config.embedder)
    scorer = scorer_fingerprint(config)
    contexts_of: dict[str, list[str]] = {}
    rows = []
    for pair in report.iterate(pairs, "reddit pairs"):
        if pair.thread_id not in contexts_of:
            turn = rag.prepare([{"role": "user", "content": pair.question}], use_retrieval=rag.retrieval_available)
            contexts_of[pair.thread_id] = [d.text for d in turn.documents]
        contexts = contexts_of[pair.thread_id]
        values = {}
        for side, reply in ((UPVOTED, pair.upvoted), (OTHER, pair.other)):
            key = text_hash("reddit-reply", reply.body, pair.question, contexts)
            reference_hash = text_hash("reference", pair.question, pair.reference)
            cached = cache.scores(key, scorer, reference_hash)
            if cached is None:
                cached = golden_metrics([reply.body], [pair.reference], encoder)[0] if pair.reference else {}
                cached["answer_relevance"] = answer_relevance(pair.question, reply.body, encoder)
                cached["faithfulness"] = (faithfulness(reply.body, contexts, encoder, config.support_threshold)
                                          if contexts else None)
                cached["length_chars"] = len(reply.body)
                cache.put_scores(key, scorer, reference_hash, cached)
                stats.reddit_scores_computed += 1
            else:
                stats.reddit_scores_cached += 1
            values[side] = cached
        rows.append({"pair_id": pair.pair_id, "thread_id": pair.thread_id, "upvoted_score": pair.upvoted.score,
                     "other_score": pair.other.score, "reference": pair.reference is not None,
                     "scores": {metric: [values[UPVOTED].get(metric), values[OTHER].get(metric)]
                                for metric in sorted(set(values[UPVOTED]) | set(values[OTHER]))},
                     "judge": {}})
    section["pairs"] = rows
    if judge is not None and config.judge.modes:
        judged = pairs[: config.reddit_preference.judge_max_pairs] if config.reddit_preference.judge_max_pairs else pairs
        limit = config.judge.max_answer_chars
        # The judge reads the post and the replies as a Reddit reader does: no reference answer
        # (another reply is no golden answer), so each reply's grade prompt is judged once.
        try:
            if PAIRWISE in config.judge.modes:
                items = [PairwiseItem(p.pair_id, p.question, UPVOTED, p.upvoted.body, OTHER, p.other.body)
                         for p in judged]
                results, asked = judge_pairwise(judge, items, max_answer_chars=limit, cache=cache)
                stats.count_judge_prompts(asked, 2 * len(items))
                for row, result in zip(rows, results):
                    row["judge"]["pairwise"] = dataclasses.asdict(result)
            if SINGLE in config.judge.modes:
                prompts = [grading_prompt(p.question, reply.body, limit) for p in judged for reply in (p.upvoted, p.other)]
                grades, asked = judge_grades(judge, prompts, cache=cache)
                stats.count_judge_prompts(asked, len(prompts))
                for i, row in enumerate(rows[: len(judged)]):
                    row["judge"]["grades"] = [grades[2 * i], grades[2 * i + 1]]
            section["judged_pairs"] = len(judged)
        except JudgeError as err:
            section["judge_error"] = str(err)
    return section
