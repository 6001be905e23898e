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
    "ingest": ("training.ingest", "read Reddit dump files or the live API into raw records"),
    "build": ("training.datasets", "clean threads and build the SFT, RAFT, preference and golden datasets"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the YAML's)")
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    modules = {}
    for name, (module_name, help_text) in STEPS.items():
        sub = steps.add_parser(name, help=help_text, description=help_text)
        # Build every step's parser so `--help` lists them all; import cost is paid here only
        # for argument definitions, which the step modules keep free of heavy imports.
        modules[name] = importlib.import_module(module_name)
        modules[name].configure(sub)
    args = parser.parse_args(argv)
    settings = load_settings(profile=args.profile)
    return modules[args.step].run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
