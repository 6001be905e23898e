"""What a run reports as it goes and when it ends: per-stage progress (tqdm bars and/or a
callback), the counts of computed and cached work, and the machine the timings were taken on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

STAGES = ("retrieving", "answering", "scoring", "judging", "reddit pairs")  # in run order, for progress bars
ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


@dataclasses.dataclass
class RunStats:
    questions: int = 0
    models: int = 0
    answers_generated: int = 0
    answers_cached: int = 0
    scores_computed: int = 0
    scores_cached: int = 0
    judge_prompts_asked: int = 0
    judge_prompts_cached: int = 0
    reddit_pairs: int = 0
    reddit_scores_computed: int = 0
    reddit_scores_cached: int = 0
    seconds: float = 0.0
    stage_seconds: dict = dataclasses.field(default_factory=dict)  # answers, scores, judge, reddit pairs

    @property
    def computed(self) -> int:
        """Everything that was not found in the cache (0 on an unchanged rerun)."""
        return self.answers_generated + self.scores_computed + self.judge_prompts_asked + self.reddit_scores_computed

    def summary(self) -> str:
        return (
            f"{self.questions} questions x {self.models} models: "
            f"answers {self.answers_generated} generated / {self.answers_cached} cached, "
            f"scores {self.scores_computed} computed / {self.scores_cached} cached, "
            f"judge prompts {self.judge_prompts_asked} asked / {self.judge_prompts_cached} cached; "
            f"{self.reddit_pairs} Reddit-preference pairs, reply scores {self.reddit_scores_computed} computed / "
            f"{self.reddit_scores_cached} cached; {self.seconds:.0f} s ("
            + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in self.stage_seconds.items()) + ")"
        )

    def count_judge_prompts(self, asked: int, total: int) -> None:
        """`total` prompts judged, of which `asked` were not in the cache."""
        self.judge_prompts_asked += asked
        self.judge_prompts_cached += total - asked


class Progress:
    """tqdm bars for the command line and/or a callback (the app's progress bar), per stage."""

    def __init__(self, bars: bool, callback: ProgressCallback | None):
        self.bars = bars
        self.callback = callback

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(stage, done, total)

    def iterate(self, items: list, stage: str):
        self(stage, 0, len(items))
        iterable = items
        if self.bars:
            from tqdm.auto import tqdm

            iterable = tqdm(items, desc=stage)
        for done, item in enumerate(iterable, start=1):
            yield item
            self(stage, done, len(items))


def machine_description(threads: int | None = None) -> str:
    """The CPU (and GPU) the run's timings were measured on, e.g. for the report's run line;
    `threads`: those the model computed with (a local engine's `model_threads`), else torch's count."""
    import torch

    from chatbot.calibration import cpu_model
    from chatbot.doctor import cpu_flags

    found = [f for f in ("avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags()]
    flags = f" ({', '.join(found)})" if found else " (no AVX-512)"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu_model()}{flags}, {threads or torch.get_num_threads()} torch threads{gpu}"
