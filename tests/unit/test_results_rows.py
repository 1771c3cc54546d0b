"""The schema of a result row: one TypedDict, the keys the runner writes, checked on reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.errors import BenchmarkError
from benchmarks.execution.results import ROW_KEYS, ResultRow, read_rows
from benchmarks.execution.runs import RunSpec, execute_run
from benchmarks.suites.suite import TABULAR_ENV_ID


@pytest.fixture(scope="module")
def written_rows() -> list[dict]:
    """The rows the runner emits for a short replay of the shipped table."""
    spec = RunSpec(
        name="replay", suite="rows", env_id=TABULAR_ENV_ID, env_kwargs={"table": "smoke"},
        agent="fixed", agent_name="fixed", agent_kwargs={}, objective="psnr",
        objective_spec="psnr", seed=3, max_stages=2, stage_iters=1,
    )
    rows: list[dict] = []
    execute_run(spec, None, rows.append)
    return rows


def test_result_row_declares_every_key_the_runner_writes(written_rows):
    assert len(written_rows) == 2
    for row in written_rows:
        assert set(row) == set(ResultRow.__annotations__)


def test_row_keys_are_the_keys_result_row_requires():
    assert ROW_KEYS == ("run", "agent", "objective", "seed", "stage", "max_stages", "objective_value")
    assert set(ROW_KEYS) < set(ResultRow.__annotations__)


def test_rows_written_by_the_runner_read_back_byte_for_byte(written_rows, tmp_path: Path):
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in written_rows)
    (tmp_path / "results.jsonl").write_text(lines)
    rows = read_rows(tmp_path / "results.jsonl")
    assert "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows) == lines


@pytest.mark.parametrize(
    ("field", "value"),
    [("reward", "high"), ("metrics", {"psnr": "30"}), ("feedback", 3), ("device", None), ("setup_s", [1.0])],
)
def test_a_declared_field_of_the_wrong_type_is_named(written_rows, tmp_path: Path, field, value):
    row = {**written_rows[0], field: value}
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(written_rows[1]) + "\n")
    with pytest.raises(BenchmarkError, match=rf"results.jsonl:1: field '{field}[.'].*"):
        read_rows(tmp_path / "results.jsonl")


def test_an_undeclared_field_passes_as_it_is(written_rows, tmp_path: Path):
    row = {**written_rows[0], "extra": {"anything": [1, "two"]}}
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    assert read_rows(tmp_path / "results.jsonl") == [row]
