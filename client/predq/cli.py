"""The ``predq`` command: predictions, jobs, models and file scoring from a shell.

    predq predict MODEL --json '[[5.1, 3.5, 1.4, 0.2]]'     (or --csv rows.csv)
    predq models
    predq job ID [--wait]
    predq score MODEL input.parquet output.parquet [--id-column C]

The server and key come from PREDQ_URL and PREDQ_API_KEY (or --url, --api-key). Answers
are printed as JSON; errors as one line on stderr, with exit status 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from predq.client import Client
from predq.errors import PredqError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, args.api_key, timeout=args.timeout) as client:
            answer = args.run(client, args)
    except PredqError as exc:
        print(f"predq: {exc.message}" + (f" ({exc.code})" if exc.code else ""), file=sys.stderr)
        return 1
    if answer is not None:
        json.dump(answer, sys.stdout, indent=2)
        print()
    return 0


def _predict(client: Client, args: argparse.Namespace) -> Any:
    rows = json.loads(args.json) if args.json is not None else _csv_rows(args.csv)
    return client.predict(args.model, rows, version=args.version, alias=args.alias, priority=args.priority)


def _csv_rows(path: str) -> list[dict[str, float]]:
    """A CSV file's rows as objects keyed by its header (the model's feature names)."""
    with open(path, newline="") as handle:
        return [{name: float(value) for name, value in row.items()} for row in csv.DictReader(handle)]


def _job(client: Client, args: argparse.Namespace) -> Any:
    job = client.job(args.id)
    if args.wait:
        job.result()
    return job.view


def _score(client: Client, args: argparse.Namespace) -> Any:
    job = client.score_file(
        args.model, args.input, args.output, id_column=args.id_column, progress=not args.quiet
    )
    if job["status"] != "succeeded":
        print(f"predq: batch job {job['id']} ended {job['status']}", file=sys.stderr)
    return job


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", default=None, help="the server (default: PREDQ_URL, else http://127.0.0.1:8000)"
    )
    parser.add_argument("--api-key", default=None, help="the API key (default: PREDQ_API_KEY)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each call may take")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="predict rows given as JSON or a CSV file")
    predict.add_argument("model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--json", help="rows as JSON: a list of lists or of objects")
    source.add_argument("--csv", help="a CSV file whose header names the features")
    predict.add_argument("--version", type=int, default=None)
    predict.add_argument("--alias", default=None)
    predict.add_argument("--priority", choices=["high", "normal", "low"], default=None)
    predict.set_defaults(run=_predict)

    models = commands.add_parser("models", help="list the models")
    models.set_defaults(run=lambda client, _: client.models())

    job = commands.add_parser("job", help="show a job")
    job.add_argument("id")
    job.add_argument("--wait", action="store_true", help="wait until it finishes")
    job.set_defaults(run=_job)

    cancel = commands.add_parser("cancel", help="cancel a queued job (it ends cancelled, never run)")
    cancel.add_argument("id")
    cancel.set_defaults(run=lambda client, args: client.cancel(args.id).view)

    score = commands.add_parser("score", help="score a .csv or .parquet file as a batch job")
    score.add_argument("model")
    score.add_argument("input")
    score.add_argument("output", help="the result: .parquet or .csv")
    score.add_argument("--id-column", default=None, help="an input column carried to the output")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(run=_score)
    return parser


if __name__ == "__main__":
    sys.exit(main())
