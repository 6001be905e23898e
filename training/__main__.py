"""`python -m training <step> ...`: one entry point for every data and training step.

Each step lives in its own module exposing `configure(parser)` (add its arguments) and
`run(args, settings) -> int` (do the work, return an exit code). Modules are imported only when
their step runs, so `ingest` never pays for importing trl.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from settings import load_settings

STEPS = {
    "ingest": ("training.ingest", "read Reddit dump files or the live API into clean threads"),
    "build": ("training.datasets", "clean threads and build the SFT, RAFT, preference and golden datasets"),
    "qlora": ("training.sft", "QLoRA SFT adapter on the SFT dataset (4-bit base + LoRA on all linear layers)"),
    "raft": ("training.sft", "RAFT adapter: the same recipe on the RAFT dataset (documents + quoted answers)"),
    "rlhf": ("training.rlhf", "reward model, then DPO on top of the RAFT adapter (--method online: GRPO/RLOO)"),
    "pipeline": ("training.pipeline", "ingest -> index -> build -> qlora -> raft -> rlhf -> evaluate, skipping current steps"),
    # The closed loop lives in retraining/ (it serves and judges candidates, which training/ never
    # imports); this is the same command as `python -m retraining`.
    "loop": ("retraining.__main__", "the retraining loop: new arena votes -> DPO/KTO candidate -> gate -> publish"),
}


def _chosen_step(argv: list[str]) -> str | None:
    """The step named on the command line, found before parsing so only its module is imported."""
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token == "--profile":
            skip_value = True
        elif not token.startswith("-"):
            return token if token in STEPS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the YAML's)")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    chosen = _chosen_step(argv)
    module = None
    for name, (module_name, help_text) in STEPS.items():
        sub = steps.add_parser(name, help=help_text, description=help_text)
        # Only the chosen step's module is imported (and adds its arguments); the others stay
        # help-only, so `ingest` never pays for, or breaks on, another step's imports.
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(sub)
    args = parser.parse_args(argv)
    settings = load_settings(profile=args.profile)
    return module.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
