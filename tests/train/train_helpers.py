"""Helpers shared by the ident3d.train tests: a tiny run's options, the CLI, metrics rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ident3d.cli import cli, main
from ident3d.errors import UsageError

TINY = [
    "--data", "synthetic", "--n", "3", "--hidden", "16,16", "--batch-size", "32",
    "--eval-samples", "256", "--threads", "1", "--no-progress",
]  # fmt: skip


def _run_cli(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        if isinstance(r.exception, UsageError):
            return 2, str(r.exception)
        raise r.exception
    return r.exit_code or 0, r.output


def _rows(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows if r["kind"] == kind]


def _main_exit(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err
