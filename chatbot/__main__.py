"""`python -m chatbot <command>`: serving tools that need no UI.

    doctor   the CPU, torch's kernels and the weight format the settings choose (nothing loaded)
"""

from __future__ import annotations

import argparse
import json
import sys

from settings import apply_runtime, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatbot", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the YAML's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = commands.add_parser("doctor", help="name this machine as far as the model's speed and numbers go")
    doctor.add_argument("--json", action="store_true", help="print the facts as JSON instead of text")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from chatbot.doctor import format_report, report

    settings = load_settings(profile=args.profile)
    apply_runtime(settings)  # the thread count the app would run with
    facts = report(settings)
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
