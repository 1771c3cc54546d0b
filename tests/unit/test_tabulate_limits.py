"""The size limit of ``benchmarks.execution.tabulate.tabulate``: a table too large to build is
refused at once, with its node count and an estimated time, and nothing is created."""

from __future__ import annotations

import pytest

from benchmarks.execution.tabulate import MAX_NODES, TabulateError, table_nodes, table_spec_from_text, tabulate
from tests.conftest import SMALL_TABLE_TOML


def _spec(stages: int):
    """A TableSpec of any depth (read without a size limit: tabulate's own check is tested)."""
    return table_spec_from_text(SMALL_TABLE_TOML.replace("stages = 2", f"stages = {stages}"), max_nodes=None)


def test_table_nodes_counts_every_node_of_every_seed():
    assert table_nodes(_spec(2)) == 2 * (1 + 3 + 9)


@pytest.mark.timeout(60)
def test_a_table_too_deep_to_count_is_refused_at_once(tmp_path):
    with pytest.raises(TabulateError, match=r"about 10\^\d+ nodes.*T = 1000000000 stages.*years.*--max-nodes"):
        tabulate(_spec(10**9), tmp_path / "t.sqlite", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_limit_counts_nodes_and_max_nodes_sets_it(tmp_path):
    nodes = table_nodes(_spec(12))  # 2 * (3**13 - 1) / 2 = 1,594,322
    assert nodes > MAX_NODES
    with pytest.raises(TabulateError, match=f"{nodes:,} nodes .* the limit is {MAX_NODES:,}"):
        tabulate(_spec(12), tmp_path / "t.sqlite", progress=False)
    with pytest.raises(TabulateError, match="the limit is 25"):
        tabulate(_spec(2), tmp_path / "t.sqlite", progress=False, max_nodes=25)
    with pytest.raises(ValueError, match="max_nodes=0 is not allowed"):
        tabulate(_spec(2), tmp_path / "t.sqlite", progress=False, max_nodes=0)
    assert list(tmp_path.iterdir()) == []
