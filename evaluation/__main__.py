"""python -m evaluation run | report"""

from __future__ import annotations

import argparse
import logging
import sys

from settings import ConfigError, apply_runtime, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the file's default)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="answer every golden question with every model, score and judge (cached)")
    run.add_argument("--models", help="comma-separated model names (default: evaluation.models, else all served)")
    run.add_argument("--max-questions", type=int, help="first N golden questions (default: evaluation.max_questions)")
    run.add_argument("--no-judge", action="store_true", help="skip the LLM judge")
    run.add_argument("--report", action="store_true", help="write the report afterwards")
    commands.add_parser("report", help="write report.md and the plots from the last run and the arena votes")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(profile=args.profile)
    apply_runtime(settings)
    from evaluation.config import EvaluationConfig
    from evaluation.report import ResultsMissingError, write_report
    from evaluation.golden import GoldenMissingError
    from evaluation.runner import run_evaluation

    try:
        overrides: dict = {}
        if args.command == "run":
            if args.models:
                overrides["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
            if args.max_questions is not None:
                overrides["max_questions"] = args.max_questions
            if args.no_judge:
                overrides["judge"] = {"modes": []}
        if overrides:
            settings = settings.with_overrides({"evaluation": overrides})
        config = EvaluationConfig.from_settings(settings)
        if args.command == "run":
            result = run_evaluation(settings, config=config)
            print(result.stats.summary())
            for notice in result.notices:
                print(f"note: {notice}", file=sys.stderr)
            print(f"results: {result.results_path}")
            if not args.report:
                return 0
        print(f"report: {write_report(settings, config=config)}")
        return 0
    except (GoldenMissingError, ResultsMissingError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
