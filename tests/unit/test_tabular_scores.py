"""Verdicts of a table replay on synthetic tables whose answer is known."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmarks.execution.runs import expand
from benchmarks.reports.scores import score_runs
from benchmarks.suites.suite import load_suite_text, validate_values
from tests.synthetic_table import PRESETS, write_table

NAMES = list(PRESETS)


def _noise(*key: object) -> float:
    """A fixed draw per key, ~N(0, 1)."""
    return float(np.random.default_rng(zlib.crc32(repr(key).encode())).normal())


def one_db_below(instance: str, replicate: int, path: tuple[int, ...], split: str) -> float:
    """science: +0.5 dB per stage of edges (pixel x2 = 30, edges x2 = 31); textures: every
    sequence tied; train-a: pixel better. Replicates move every sequence together
    (training randomness, sd 0.2) plus 0.01 dB of their own."""
    offset = 0.2 * _noise(instance, replicate)
    own = 0.01 * _noise(instance, replicate, path, split)
    edges = sum(path)
    if instance == "science":
        return 30.0 + 0.5 * edges + offset + own
    if instance == "textures":
        return 25.0 + offset + own
    return 20.0 + 0.3 * (len(path) - edges) + offset + own


def _suite(table: Path, agents: dict[str, str], seeds: int = 8, extra: str = "") -> str:
    entries = "\n".join(
        f'[[agents]]\nname = "fixed"\nlabel = "{label}"\nkwargs = {{ preset = "{preset}" }}\n'
        for label, preset in agents.items()
    )
    return f"""
name = "synthetic"
seeds = {list(range(100, 100 + seeds))}
objectives = ["psnr"]
{extra}
[env]
id = "LossAgent/Tabular-v0"
kwargs = {{ table = "{table}", instances = "test" }}

[budget]
max_stages = 2
stage_iters = 1

{entries}
"""


def _rows(run: str, presets: list[str]) -> list[dict]:
    return [{"run": run, "stage": i + 1, "preset": p, "budget": None} for i, p in enumerate(presets)]


def score(table: Path, plays: dict[str, dict[str, list[str]] | list[str]], seeds: int = 8):
    """Score agents that play fixed sequences: ``{agent: sequence}`` or
    ``{agent: {instance: sequence}}``."""
    suite = load_suite_text(_suite(table, dict.fromkeys(plays, NAMES[0]), seeds))
    validate_values(suite)
    specs = {s.name: s for s in expand(suite)}
    import gymnasium as gym

    env = gym.make("LossAgent/Tabular-v0", table=str(table), instances="test", max_stages=2).unwrapped
    runs = {}
    for name, spec in specs.items():
        play = plays[spec.agent]
        if isinstance(play, dict):
            play = play[env.table.instance_of(env.tree_of(spec.seed)).name]
        runs[name] = _rows(name, list(play))
    return score_runs(runs, specs, str(table))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("t") / "one_db.sqlite", one_db_below)


def test_one_db_below_on_one_instance_is_below_there_and_overall(table):
    scores = score(table, {"fixed": ["pixel", "pixel"], "good": ["edges", "edges"]})
    fixed = {i: scores.agents[("tuned", "psnr", i, "fixed")] for i in ("science", "textures")}
    assert fixed["science"].gains["hindsight"].mean == pytest.approx(-1.0, abs=0.03)
    assert fixed["science"].verdicts["hindsight"] == "below"
    assert fixed["textures"].verdicts["hindsight"] in ("within noise", "identical")
    estimate, word = scores.overall[("tuned", "psnr", "fixed", "hindsight")]
    assert word == "below" and estimate.mean == pytest.approx(-0.5, abs=0.03)
    # the first preset and the transferred static (pixel, best on train-a) are what fixed plays
    assert scores.cells[("tuned", "psnr", "science")].presets["transferred"] == "pixel"
    assert fixed["science"].verdicts["first"] == "identical"
    assert fixed["science"].verdicts["transferred"] == "identical"
    good = scores.agents[("tuned", "psnr", "science", "good")]
    assert good.verdicts["first"] == "above" and good.score.mean == pytest.approx(1.0)
    # the choice of preset moves PSNR on science only: 1 of 2 test instances is not most
    assert not scores.admission[("tuned", "psnr")].admitted and scores.ranking["tuned"] == []


def test_a_pooled_sd_would_have_called_it_noise(table):
    """The case discriminates: the sd of the 8 runs of both instances (the pooled rule
    the verdicts replaced) puts the 1 dB loss within 3 standard errors."""
    scores = score(table, {"fixed": ["pixel", "pixel"]})
    gains = np.concatenate([
        scores.agents[("tuned", "psnr", i, "fixed")].paired_with(scores.cells[("tuned", "psnr", i)].values["hindsight"])
        for i in ("science", "textures")
    ])
    z = gains.mean() / (gains.std(ddof=1) / math.sqrt(len(gains)))
    assert abs(z) < 3.0


def test_no_cell_is_dropped_when_scheduling_is_small(table):
    scores = score(table, {"fixed": ["pixel", "pixel"]})
    textures = scores.cells[("tuned", "psnr", "textures")]
    assert abs(textures.scheduling.mean) < 0.05  # nothing to schedule there
    assert scores.agents[("tuned", "psnr", "textures", "fixed")].score is not None or textures.range <= 0
    assert ("tuned", "psnr", "textures", "fixed") in scores.agents


def test_primary_score_is_one_for_the_oracle_and_zero_for_the_random_expectation(table):
    scores = score(table, {"oracle": ["edges", "edges"], "half": ["pixel", "edges"]})
    science = scores.agents[("tuned", "psnr", "science", "oracle")]
    assert science.score.mean == pytest.approx(1.0)
    # pixel > edges is the mean of the four sequences here (30.5): a random schedule
    assert scores.agents[("tuned", "psnr", "science", "half")].score.mean == pytest.approx(0.0, abs=0.05)


def test_admission_refuses_an_objective_whose_choice_moves_nothing(tmp_path):
    flat = write_table(tmp_path / "flat.sqlite", lambda i, r, p, s: 25.0 + 0.2 * _noise(i, r) + 0.01 * _noise(i, r, p, s))
    scores = score(flat, {"fixed": ["pixel", "pixel"]})
    admission = scores.admission[("tuned", "psnr")]
    assert not admission.admitted and "beyond noise on 0 of 2" in admission.reason
    assert scores.ranking["tuned"] == []


def _random_table_scores(tmp_path: Path, draw: int):
    """Agents playing each of the 4 sequences on a table of random preset effects."""
    rng = np.random.default_rng(draw)
    effects = {inst: rng.normal(0, 1.0, size=(2, 2)) for inst in ("train-a", "science", "textures")}

    def value(instance, replicate, path, split):
        base = 25.0 + 0.3 * _noise(draw, instance, replicate) + 0.05 * _noise(draw, instance, replicate, path, split)
        return base + sum(effects[instance][d, a] for d, a in enumerate(path))

    t = write_table(tmp_path / f"random{draw}.sqlite", value)
    sequences = [[a, b] for a in NAMES for b in NAMES]
    plays = {f"agent{i}": [NAMES[x] for x in map(NAMES.index, s)] for i, s in enumerate(sequences)}
    return plays, score(t, plays)


@pytest.mark.parametrize("case", range(6))
def test_an_agent_below_another_on_every_instance_is_never_ranked_above_it(tmp_path, case):
    # the case-th draw whose objective is admitted (a draw where the presets move nothing
    # beyond noise has no ranking to test)
    for draw in range(case, case + 6 * 10, 6):
        plays, scores = _random_table_scores(tmp_path, draw)
        if scores.ranking["tuned"]:
            break
    else:
        pytest.fail(f"no admitted draw among {list(range(case, case + 60, 6))}")
    rank = {a: i for i, (a, *_) in enumerate(scores.ranking["tuned"])}
    instances = ("science", "textures")
    for a in plays:
        for b in plays:
            mean = {x: {i: np.mean(list(scores.agents[("tuned", "psnr", i, x)].j.values())) for i in instances} for x in (a, b)}
            if all(mean[a][i] < mean[b][i] for i in instances):
                assert rank[a] > rank[b], (a, b, mean)


def test_the_report_says_below_where_the_agent_is_below(table):
    from benchmarks.reports.render import tabular_markdown

    scores = score(table, {"fixed": ["pixel", "pixel"], "good": ["edges", "edges"]})
    text = tabular_markdown(scores, "synthetic", {})
    lines = text.splitlines()
    assert lines[0] == "## Verdicts on the test instances"
    header = next(line for line in lines if line.startswith("| agent | vs `pixel`: science"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in lines if line.startswith("| fixed |"))
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
    assert cells["vs best static in hindsight: science"].endswith("**below**")
    assert cells["vs best static in hindsight: overall"].endswith("**below**")
    assert cells["vs `pixel`: science"] == "0 identical"
    assert "within noise" in cells["vs best static in hindsight: textures"] or cells[
        "vs best static in hindsight: textures"] == "0 identical"
    assert "`fixed` played `pixel > pixel` on every run." in text


@pytest.mark.parametrize("seeds, played, why", [(8, None, False), (4, 2, False), (2, 1, True)])
def test_the_report_says_how_many_replicates_the_agents_played_and_why_one_gives_no_test(table, seeds, played, why):
    from benchmarks.reports.render import tabular_markdown

    scores = score(table, {"fixed": ["pixel", "pixel"], "good": ["edges", "edges"]}, seeds=seeds)
    text = tabular_markdown(scores, "synthetic", {})
    header = next(line for line in text.splitlines() if line.startswith("Table `synthetic`"))
    assert "(4 replicates each" in header
    assert (f"; the agents played {played} of them)" in header) == (played is not None)
    assert ("A verdict needs two replicates of an instance" in header) == why
    verdicts = {a.verdicts["hindsight"] for a in scores.agents.values()}
    assert ("no test" in verdicts) == why


def test_a_suite_whose_seeds_mix_tree_seeds_and_problem_seeds_is_refused(table):
    from benchmarks.suites.suite import SuiteError

    text = _suite(table, {"fixed": "pixel"}).replace(str(list(range(100, 108))), str(list(range(8))))
    with pytest.raises(SuiteError, match=r"seeds \[4, 5, 6, 7\] name trees of the instances this suite plays"):
        validate_values(load_suite_text(text))
