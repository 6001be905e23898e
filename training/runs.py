"""One trainer run: trl's arguments, a progress line per logging step, the evaluation figures
it reports, the seed and the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from training.config import RunSettings
from training.precision import Precision


def progress_callback(name: str, log: Callable[[str], None] = print):
    """A trainer callback printing one line per logging step: step/total, elapsed, ETA."""
    from transformers import TrainerCallback

    class ProgressPrinter(TrainerCallback):
        started = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            log(f"{name}: training {state.max_steps} optimizer steps")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.max_steps or self.started is None:
                return
            elapsed = time.monotonic() - self.started
            done = state.global_step
            eta = elapsed / done * (state.max_steps - done) if done else float("nan")
            logs = logs or {}
            loss = logs.get("loss", logs.get("eval_loss"))
            kind = "eval loss" if "eval_loss" in logs else "loss"
            loss_text = f", {kind} {loss:.3f}" if isinstance(loss, (int, float)) else ""
            log(f"{name}: step {done}/{state.max_steps}, {_minutes(elapsed)} elapsed, ETA {_minutes(eta)}{loss_text}")

    return ProgressPrinter()


def _minutes(seconds: float) -> str:
    if seconds != seconds:  # nan: no step done yet
        return "?"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def training_arguments(config_cls, run: RunSettings, output_dir: Path, seed: int, device: str,
                       precision: Precision | None = None, **extra):
    """trl's config for one run, from the profile's hyper-parameters. Nothing is checkpointed:
    the adapter is written once, complete, at the end."""
    arguments = dict(
        output_dir=str(output_dir),
        learning_rate=run.learning_rate,
        num_train_epochs=run.epochs,
        max_steps=run.max_steps,
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.batch_size,
        gradient_accumulation_steps=run.grad_accumulation,
        warmup_steps=run.warmup_ratio,
        lr_scheduler_type=run.lr_scheduler,
        optim=run.optimizer,
        weight_decay=run.weight_decay,
        bf16=precision.autocast if precision is not None else run.bf16,
        disable_tqdm=True,  # ProgressPrinter prints one line per logging step instead
        gradient_checkpointing=run.gradient_checkpointing,
        eval_strategy="steps",
        eval_steps=run.eval_steps,
        eval_on_start=True,  # the "before" point of the eval-loss curve
        logging_steps=run.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    arguments.update(extra)
    return config_cls(**arguments)


def eval_points(log_history: Sequence[Mapping], key: str = "eval_loss") -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e]


def final_evaluation(trainer) -> dict:
    """The eval metrics at the last step: the periodic evaluation's when it ran there, else a new one."""
    history = trainer.state.log_history
    last = [e for e in history if "eval_loss" in e and int(e.get("step", -1)) == trainer.state.global_step]
    if last:
        return dict(last[-1])
    return trainer.evaluate()


def loss_summary(log_history: Sequence[Mapping]) -> dict[str, float | None]:
    """Eval loss before (step 0) and after training, and the last logged train loss."""
    evals = eval_points(log_history)
    train = [float(e["loss"]) for e in log_history if "loss" in e]
    return {
        "eval_loss_before": evals[0][1] if evals else None,
        "eval_loss_after": evals[-1][1] if evals else None,
        "train_loss_first": train[0] if train else None,
        "train_loss_last": train[-1] if train else None,
    }


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)
