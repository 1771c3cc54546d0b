"""A suite's ``[table]`` section is checked whole when it is read, before a build creates
anything: integers that are integers, enough replicates, a size counted from the
table's dimensions, and every instance's configuration as the build would make it."""

from __future__ import annotations

import pytest
import torch

from benchmarks.execution.tabulate import tabulate
from benchmarks.suites.suite import SuiteError
from benchmarks.suites.table import table_spec_from_text
from tests.conftest import INSTANCE_TABLE_TOML, SMALL_TABLE_TOML

SCIENCE = 'kwargs = { dataset = "skimage:science" }'
"""The kwargs of the third instance (``instances[2]``, on line 29) of the table of instances."""


def _refused(text: str, key: str, line: int, *expected: str) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        table_spec_from_text(text, source="t.toml")
    error = info.value
    assert (error.key, error.line) == (key, line), str(error)
    for part in expected:
        assert part in str(error), str(error)
    return error


@pytest.mark.parametrize("value", ["1", "0", "-3"])
def test_a_table_of_instances_needs_two_replicates(value):
    _refused(
        INSTANCE_TABLE_TOML.replace("replicates = 2", f"replicates = {value}"), "table.replicates", 5,
        f"replicates = {value} is too few", "noise", "Allowed: an integer >= 2",
    )


@pytest.mark.parametrize(
    "edit, key, line, got",
    [
        (("replicates = 2", "replicates = true"), "table.replicates", 5, "got True"),
        (("replicates = 2", "replicates = 2.0"), "table.replicates", 5, "got 2.0"),
        (("replicates = 2", 'replicates = "2"'), "table.replicates", 5, "got '2'"),
        (("stages = 2", "stages = true"), "table.stages", 4, "got True"),
        (("replicates = 2", "replicates = 2\nthreads = 1.0"), "table.threads", 6, "got 1.0"),
    ],
)
def test_integers_are_integers_not_booleans_floats_or_text(edit, key, line, got):
    _refused(INSTANCE_TABLE_TOML.replace(*edit), key, line, "valid integer", got)


def test_a_seed_that_is_a_boolean_is_refused():
    _refused(SMALL_TABLE_TOML.replace("seeds = [123, 456]", "seeds = [123, true]"), "table.seeds[1]", 5, "got True")


def test_a_table_of_instances_too_large_is_refused_by_its_size_when_read():
    # 10**9 replicates: tests/integration/test_tabulate_hostile.py, in a process of bounded memory
    text = INSTANCE_TABLE_TOML.replace("replicates = 2", "replicates = 1000000")
    _refused(
        text, "table", 2, "28,000,000 nodes", "4 instance(s) x 1,000,000 replicates", "the limit is 100,000",
        "Estimated build time", "--max-nodes 28000000",
    )
    with pytest.raises(SuiteError, match=r"has 56 nodes .*the limit is 20\."):
        table_spec_from_text(INSTANCE_TABLE_TOML, max_nodes=20)
    assert len(table_spec_from_text(INSTANCE_TABLE_TOML, max_nodes=56).seeds) == 8  # 8 trees x 7 nodes


CONFIGURATIONS = [
    pytest.param(
        INSTANCE_TABLE_TOML.replace('dataset = "skimage:science"', 'dataset = "skimage:nope"'),
        "table.instances[2].kwargs.dataset", 29, ("instance 'science'", "'skimage:nope'", "'skimage:photos'"),
        id="dataset",
    ),
    pytest.param(
        INSTANCE_TABLE_TOML.replace(SCIENCE, 'kwargs = { dataset = "skimage:science", losses = ["l1", "ssim"] }'),
        "table.instances[2].kwargs.losses", 29, ("instance 'science'", "cannot play preset 'edges'", "'gradient'"),
        id="losses",
    ),
    pytest.param(
        INSTANCE_TABLE_TOML.replace(SCIENCE, 'kwargs = { dataset = "skimage:science", device = "cuda" }'),
        "table.instances[2].kwargs.device", 29, ("instance 'science'", "device='cuda'", "Allowed on this machine"),
        id="device",
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    pytest.param(
        INSTANCE_TABLE_TOML.replace("sigma = 15.0", "sigma = -1.0"),
        "table.instances[3].kwargs.sigma", 35, ("instance 'noisy'", "sigma=-1.0", "[0, 255]"),
        id="value",
    ),
    pytest.param(
        INSTANCE_TABLE_TOML.replace(SCIENCE, 'kwargs = { dataset = "skimage:science", backbone = "tiniest" }'),
        "table.instances[2].kwargs.backbone", 29, ("No backbone named 'tiniest'",),
        id="backbone",
    ),
    pytest.param(
        INSTANCE_TABLE_TOML.replace(SCIENCE, 'kwargs = { dataset = "skimage:science", losses = ["l1", "gradiant"] }'),
        "table.instances[2].kwargs.losses[1]", 29, ("No loss named 'gradiant'", "'gradient'"),
        id="loss name",
    ),
    pytest.param(
        SMALL_TABLE_TOML.replace("eval_size = 64", "eval_size = 8"),
        "table.metrics[1]", 6, ("eval_size=8 is too small for the metric 'ssim'",),
        id="panel",
    ),
]


@pytest.mark.parametrize("text, key, line, expected", CONFIGURATIONS)
def test_every_configuration_a_build_makes_is_checked_when_the_suite_is_read(text, key, line, expected):
    _refused(text, key, line, *expected)


@pytest.mark.timeout(120)
def test_a_build_with_a_bad_instance_creates_nothing(tmp_path):
    """The bad instance comes third: a build that checked only the first would store
    units of the first two before it failed."""
    suite = tmp_path / "t.toml"
    suite.write_text(INSTANCE_TABLE_TOML.replace('dataset = "skimage:science"', 'dataset = "skimage:nope"'))
    with pytest.raises(SuiteError, match="instances.2..kwargs.dataset"):
        tabulate(suite, tmp_path / "t.sqlite", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["t.toml"]
