"""The Evaluation tab: the latest report (markdown + plots), each adapter's training loss curve,
and a button that reruns the evaluation in the background.

The report is written by the pipeline's last step (`python -m training pipeline`, so `make run`
shows it at once) or by `python -m evaluation run --report`. "Run the evaluation" starts one
background run on the app's own engine (a second click follows the run already going); it takes
the engine pass by pass like any chat user, so the others keep being answered. The progress bar
follows the run's stages; the run goes on when the page is closed. "Update with the latest
votes" rewrites the report from the last run's results and the current arena votes (seconds,
no model involved).

Loss curves are matplotlib figures drawn from each adapter's `log_history.json` (the trainer's
log, written next to the weights by training.adapter_output.write_adapter).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import gradio as gr

from evaluation.config import EvaluationConfig
from evaluation.report import REPORT_FILE
from modeling.adapters import current_adapter_dir

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
LOG_HISTORY_FILE = "log_history.json"  # the name training.adapter_output.write_adapter gives the trainer's log
NO_REPORT = ("No evaluation report yet. The pipeline's last step writes it (`make run`, or "
             "`python -m training pipeline`); **Run the evaluation** below does the same on the models served here.")
POLL_SECONDS = 1.0


def read_report(directory: Path) -> tuple[str, list[tuple[str, str]]]:
    """(markdown without image links, [(png path, caption)]) of the report in `directory`."""
    path = Path(directory) / REPORT_FILE
    if not path.exists():
        return NO_REPORT, []
    text = path.read_text()
    images = []
    for caption, target in _IMAGE.findall(text):
        image = (path.parent / target).resolve()
        # Only files inside the evaluation folder: the report is ours, but stay strict anyway.
        if image.suffix == ".png" and image.is_file() and path.parent.resolve() in image.parents:
            images.append((str(image), caption))
    return _IMAGE.sub("", text), images


def loss_curve_figure(adapter_dir: Path, name: str):
    """A matplotlib Figure of the adapter's train and eval loss by optimizer step (a note in the
    figure when the adapter or its log is missing or unreadable)."""
    from matplotlib.figure import Figure  # no pyplot: figures built in server threads

    figure = Figure(figsize=(6, 3.6))
    ax = figure.subplots()
    history = None
    try:
        history = json.loads((Path(adapter_dir) / LOG_HISTORY_FILE).read_text())
    except (OSError, ValueError):
        pass
    train = [(int(e["step"]), float(e["loss"])) for e in history or [] if isinstance(e, dict) and "loss" in e and "step" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in history or []
             if isinstance(e, dict) and "eval_loss" in e and "step" in e]
    if train:
        ax.plot(*zip(*train), label="train loss", marker=".")
    if evals:
        ax.plot(*zip(*evals), label="eval loss", marker="o")
    if train or evals:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        why = "not trained yet" if not Path(adapter_dir).is_dir() else f"no readable {LOG_HISTORY_FILE}"
        ax.text(0.5, 0.5, f"{name}: {why}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title(f"{name}: training loss")
    figure.tight_layout()
    return figure


@dataclasses.dataclass
class JobState:
    running: bool = False
    stage: str = ""
    done: int = 0
    total: int = 0
    message: str = ""  # the last run's outcome, or its error


class EvaluationJob:
    """At most one background evaluation per app; everyone sees the same progress."""

    def __init__(self, settings, engine, rag, config: EvaluationConfig, write_lock: threading.Lock):
        self.settings = settings
        self.engine = engine
        self.rag = rag
        self.config = config
        self.write_lock = write_lock  # the report and its plot files are rewritten by one thread at a time
        self._lock = threading.Lock()
        self._state = JobState()

    def state(self) -> JobState:
        with self._lock:
            return dataclasses.replace(self._state)

    def start(self) -> bool:
        """Start a run; False when one is already going (the caller then follows it)."""
        with self._lock:
            if self._state.running:
                return False
            self._state = JobState(running=True, stage="starting")
        threading.Thread(target=self._run, name="wayfarer-evaluation", daemon=True).start()
        return True

    def _progress(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._state.stage, self._state.done, self._state.total = stage, done, total

    def _run(self) -> None:
        from evaluation.report import write_report
        from evaluation.runner import run_evaluation

        try:
            result = run_evaluation(self.settings, engine=self.engine, rag=self.rag, config=self.config,
                                    progress=False, on_progress=self._progress)
            with self.write_lock:
                write_report(self.settings, config=self.config)
            message = f"Evaluation finished: {result.stats.summary()}"
            if result.notices:
                message += "\n\n" + "\n".join(f"⚠ {n}" for n in result.notices)
        except Exception as err:  # shown in the tab; the app keeps serving
            message = f"⚠ The evaluation failed: {type(err).__name__}: {err}"
        with self._lock:
            self._state.running = False
            self._state.message = message


def build_evaluation_tab(settings, tab: gr.Tab | None = None, *, engine=None, rag=None) -> None:
    """Render the tab into the surrounding Blocks. Pass the enclosing `tab` to refresh on open,
    and the app's `engine` (and `rag`) to offer the background rerun."""
    from PIL import Image

    config = EvaluationConfig.from_settings(settings)
    lock = threading.Lock()  # report.md and its plot files are rewritten in place
    job = EvaluationJob(settings, engine, rag, config, lock) if engine is not None else None
    adapters = settings.config.model.adapters
    adapters_dir = settings.path("adapters")

    with gr.Row():
        refresh = gr.Button("🔄 Refresh")
        update = gr.Button("Update with the latest votes")
        run = gr.Button("▶ Run the evaluation", variant="primary", visible=job is not None)
    status = gr.Markdown("")
    gallery = gr.Gallery(label="Plots", columns=2, height="auto", interactive=False)
    report = gr.Markdown("Open this tab or press **Refresh** to show the latest report.")
    with gr.Accordion("Training loss curves", open=True):
        with gr.Row():
            curves = [gr.Plot(label=f"{name} loss", elem_id=f"loss-curve-{name}") for name in adapters]

    def load(message: str = ""):
        with lock:
            text, images = read_report(config.directory)
            pictures = [(Image.open(p).copy(), caption) for p, caption in images]
        figures = [loss_curve_figure(current_adapter_dir(adapters_dir / name), name) for name in adapters]
        return (message, pictures, text, *figures)

    def on_update():
        from evaluation.report import ResultsMissingError, write_report

        try:
            with lock:
                write_report(settings, config=config)
        except ResultsMissingError as err:
            return load(f"⚠ {err}")
        return load("Report updated with the current arena votes.")

    def on_run(progress=gr.Progress()):
        if job is None:
            return load("⚠ No model is loaded in this app, so it cannot run the evaluation.")
        started = job.start()
        state = job.state()
        while state.running:
            fraction = state.done / state.total if state.total else 0.0
            progress(fraction, desc=f"{state.stage} ({state.done}/{state.total})" if state.total else state.stage)
            time.sleep(POLL_SECONDS)
            state = job.state()
        note = "" if started else "(A run was already going; this is its outcome.) "
        return load(note + state.message)

    outputs = [status, gallery, report, *curves]
    refresh.click(load, None, outputs, api_name="evaluation_refresh")
    update.click(on_update, None, outputs, api_name="evaluation_update")
    # Its own queue slot: a long run must not hold back the tab's other buttons.
    run.click(on_run, None, outputs, api_name="evaluation_run", concurrency_id="evaluation_run", concurrency_limit=4)
    if tab is not None:
        tab.select(load, None, outputs, api_visibility="private")
