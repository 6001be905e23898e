"""The Evaluation tab: the latest report (markdown + plots), refreshed on demand.

The tab never runs models: `python -m evaluation run` does. "Refresh" re-reads report.md and
its plots; "Update with the latest votes" rewrites the report from the last run's results and
the current arena votes (seconds, no model involved).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import gradio as gr

from evaluation.config import EvaluationConfig
from evaluation.report import REPORT_FILE

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
NO_REPORT = ("No evaluation report yet. Run `python -m evaluation run` and then `python -m evaluation report` "
             "(or `python -m evaluation run --report`).")


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


def build_evaluation_tab(settings, tab: gr.Tab | None = None) -> None:
    """Render the tab into the surrounding Blocks. Pass the enclosing `tab` to refresh on open."""
    from PIL import Image

    config = EvaluationConfig.from_settings(settings)
    lock = threading.Lock()  # matplotlib and the shared plot files are not thread-safe

    with gr.Row():
        refresh = gr.Button("🔄 Refresh")
        update = gr.Button("Update with the latest votes")
    status = gr.Markdown("")
    gallery = gr.Gallery(label="Plots", columns=2, height="auto", interactive=False)
    report = gr.Markdown("Open this tab or press **Refresh** to show the latest report.")

    def load(message: str = ""):
        with lock:
            text, images = read_report(config.directory)
            pictures = [(Image.open(p).copy(), caption) for p, caption in images]
        return message, pictures, text

    def on_update():
        from evaluation.report import ResultsMissingError, write_report

        try:
            with lock:
                write_report(settings, config=config)
        except ResultsMissingError as err:
            return load(f"⚠ {err}")
        return load("Report updated with the current arena votes.")

    outputs = [status, gallery, report]
    refresh.click(load, None, outputs, api_name="evaluation_refresh")
    update.click(on_update, None, outputs, api_name="evaluation_update")
    if tab is not None:
        tab.select(load, None, outputs, api_visibility="private")
