"""Tables of problem instances (format 2): instances with replicates, the replicate drawn
from the reset seed, the oracle on replicate means, the train/test split of instances,
the env's view (validation of its instances only), and agents that tune on the training
instances only."""

from __future__ import annotations

import itertools
import json
import sqlite3

import gymnasium as gym
import numpy as np
import pytest

import lossagent_env  # noqa: F401  (registers the ids)
from agents import make_agent, run_episode
from agents.spec import AgentSpec
from benchmarks.suites.suite import SuiteError
from benchmarks.suites.table import load_table_spec, table_spec_from_text
from lossagent_env.tabular import TableAnalysis, TableFormatError, TabularEnv, load_table
from lossagent_env.tabular.build import make_build_env
from lossagent_env.tabular.check import check_against_live
from tests.conftest import INSTANCE_TABLE_TOML

TRAIN, TEST = ["photos", "scenes"], ["science", "noisy"]


def replay(instance_table, **kwargs) -> TabularEnv:
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), **kwargs).unwrapped
    assert isinstance(env, TabularEnv)
    return env


def test_the_header_lists_the_instances_and_their_replicates(instance_table):
    table = load_table(instance_table["path"])
    assert [(i.name, i.split, i.seeds) for i in table.instances] == [
        ("photos", "train", (0, 1)), ("scenes", "train", (2, 3)), ("science", "test", (4, 5)), ("noisy", "test", (6, 7)),
    ]
    assert table.seeds == tuple(range(8))
    noisy = table.instance("noisy")
    assert noisy.env_id == "LossAgent/Denoising-v0"
    assert noisy.env_kwargs["dataset"] == "skimage:textures" and noisy.env_kwargs["sigma"] == 15.0
    assert noisy.env_kwargs["stage_iters"] == 2  # the table's own kwargs, with the instance's
    db = sqlite3.connect(instance_table["path"])
    header = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM header")}
    db.close()
    assert header["format_version"] == 2
    assert header["instances"][3]["env_config"]["task"] == "denoise"
    assert header["build"]["seconds"] > 0  # the measured build time


def test_a_reset_seed_plays_one_instance_and_one_of_its_replicates(instance_table):
    env = replay(instance_table, objective="psnr", instances="test")
    played = []
    for seed in range(4):
        _, info = env.reset(seed=seed)
        played.append((env.instance, env.replicate, env.table_seed))
        assert info["instance"] == env.instance
        assert env.config.dataset == env.table.instance(env.instance).env_kwargs["dataset"]
    # seeds 0 .. I*R-1 play every (instance, replicate) once, instance i at seed % I
    assert played == [("science", 0, 4), ("noisy", 0, 6), ("science", 1, 5), ("noisy", 1, 7)]
    assert env.config.task == "denoise" and env.task_description.startswith("denois")
    env.reset(seed=4 + 8 * 1000)
    assert (env.instance, env.replicate) == ("science", 0)  # any seed >= 0 maps to a problem
    env.reset()  # no seed: drawn, still a test instance
    assert env.instance in TEST


def test_a_list_of_instances_is_played_in_the_order_given(instance_table):
    env = replay(instance_table, objective="psnr", instances=["noisy", "science"])
    assert [i.name for i in env.instances] == ["noisy", "science"]
    played = []
    for seed in (100, 101):
        env.reset(seed=seed)
        played.append(env.instance)
    assert played == ["noisy", "science"]  # instance s % I of the list, as Starting State says


def test_a_diverged_stage_costs_the_penalty_of_the_episodes_instance(tmp_path):
    from tests.synthetic_table import write_table

    table = write_table(
        tmp_path / "penalties.sqlite", lambda instance, replicate, path, split: 25.0,
        kwargs={"science": {"divergence_penalty": -3.0}, "textures": {"divergence_penalty": -7.0}},
        diverged=lambda instance, path: path == (1,),
    )
    env = gym.make("LossAgent/Tabular-v0", table=str(table), instances="test").unwrapped
    rewards = {}
    for name in ("science", "textures", "science"):
        env.reset(seed=env.table.instance(name).seeds[0])
        rewards[name] = (env.step(1)[1], env.step(0)[1])
    assert rewards == {"science": (-3.0, 0.0), "textures": (-7.0, 0.0)}
    env.close()


def test_the_replay_equals_the_live_env_of_each_instance(instance_table):
    spec = load_table_spec(instance_table["suite"])
    env = replay(instance_table, objective={"psnr": 1.0, "ssim": 1.0})
    for tree in (1, 6):  # a replicate of an SR instance, and of the denoising one
        live = make_build_env(spec, tree)
        try:
            live_info = live.reset(seed=tree)[-1]
            env.reset(seed=tree)  # a seed of a tree plays that tree, as the live env does
            assert env.table_seed == tree
            for action in (1, 0):
                live_info = live.step(action)[-1]
                info = env.step(action)[-1]
                for metric in ("psnr", "ssim"):
                    assert info["metrics"][metric] == live_info["metrics"][metric]
        finally:
            live.close()


def test_the_instances_argument_names_what_is_allowed(instance_table):
    assert [i.name for i in replay(instance_table, instances="train").instances] == TRAIN
    assert [i.name for i in replay(instance_table, instances=["noisy"]).instances] == ["noisy"]
    assert len(replay(instance_table).instances) == 4  # default: all
    for bad, error in (("validation", ValueError), (["nope"], ValueError), (["noisy", "noisy"], ValueError), (3, TypeError)):
        with pytest.raises(error, match="Allowed: None or 'all'"):
            replay(instance_table, instances=bad)
    with pytest.raises(ValueError, match="is a tree of instance 'photos', which this env does not play"):
        replay(instance_table, instances="test", seeds=[0])
    env = replay(instance_table, instances="test", seeds=[4, 6])  # one replicate each
    assert {(env.reset(seed=s)[1]["instance"], env.table_seed) for s in range(4)} == {("science", 4), ("noisy", 6)}


def test_a_format_1_table_is_one_instance_without_a_split(small_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(small_table["path"])).unwrapped
    assert [(i.name, i.split, i.seeds) for i in env.table.instances] == [("default", None, (123, 456))]
    assert env.splits == {"train": [], "test": []}
    assert "instance" not in env.reset(seed=123)[1]  # the live env's keys only
    assert env.table_seed == 123 and env.instance == "default" and env.replicate == 0
    with pytest.raises(ValueError, match="the table has no train instance"):
        gym.make("LossAgent/Tabular-v0", table=str(small_table["path"]), instances="train")


@pytest.mark.parametrize("objective", ["psnr", {"psnr": 1.0, "ssim": 20.0}])
def test_the_oracle_on_an_instances_replicate_means_by_brute_force(instance_table, objective):
    analysis = TableAnalysis(instance_table["path"], objective)
    k, m = 2, 2
    for instance in analysis.table.instances:
        result = analysis.oracle(instance=instance.name)
        sequences = list(itertools.product(range(k), repeat=m))
        j = np.array([[analysis.values([t], seq, "val")[0] for seq in sequences] for t in instance.seeds])
        means = j.mean(axis=0)
        best = int(np.argmax(means))
        assert tuple(result["actions"]) == sequences[best]
        assert np.allclose(analysis.means(instance.seeds, "val"), means)
        static = max(range(k), key=lambda p: (means[sequences.index((p,) * m)], -p))
        assert result["best_static"]["preset"] == analysis.preset_names[static]
        assert analysis.best_static(instance.seeds) == static
        leaves = analysis.leaves(instance.seeds, "test")
        assert np.allclose(leaves, [[analysis.values([t], seq, "test")[0] for seq in sequences] for t in instance.seeds])


def test_the_env_holds_the_validation_split_of_its_instances_only(instance_table):
    env = replay(instance_table, objective="psnr", instances="test")
    assert list(env.table.values) == ["val"] and list(env.table.invalid) == ["val"]
    assert env.table.seeds == (4, 5, 6, 7) and [i.name for i in env.table.instances] == TEST
    assert not hasattr(env, "oracle") and not hasattr(env, "final_objective")
    with pytest.raises(ValueError, match=r"split='test' is not in this table. Allowed: \['val'\]"):
        TableAnalysis(env.table, "psnr").j("test")
    train = env.with_instances("train")
    assert train.table.seeds == (0, 1, 2, 3) and list(train.table.values) == ["val"]


def _record_resets(monkeypatch) -> list[str]:
    """The instance of every reset of any table replay from now on."""
    seen: list[str] = []
    stock = TabularEnv.reset

    def reset(self, **kwargs):
        out = stock(self, **kwargs)
        seen.append(self.instance)
        return out

    monkeypatch.setattr(TabularEnv, "reset", reset)
    return seen


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ucb", {"train_episodes": 40}),
        ("egreedy", {"train_episodes": 40, "per_stage": False}),
        ("thompson", {"train_episodes": 40, "on_test": "continue"}),
        ("llm", {"model": "local", "examples": 4}),
        pytest.param("ppo", {"train_steps": 64, "n_steps": 16}, marks=pytest.mark.rl),
    ],
)
def test_tuning_reads_the_training_instances_only(instance_table, monkeypatch, name, kwargs):
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="psnr", instances="test")
    seen = _record_resets(monkeypatch)
    agent = make_agent(name, **kwargs)
    agent.prepare(env)
    assert seen and set(seen) <= set(TRAIN), seen
    budget = agent.budget()
    assert budget["train_instances"] == TRAIN
    assert budget["train_steps"] == budget["train_episodes"] * 2 or name == "ppo"


def test_transfer_learns_on_the_training_trees_and_refuses_a_test_tree(instance_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="psnr", instances="test")
    agent = make_agent("transfer")
    run_episode(env, agent, seed=0)
    assert agent.budget() == {"train_episodes": 4 * 4, "train_trees": [0, 1, 2, 3], "train_instances": TRAIN}
    expected = TableAnalysis(instance_table["path"], "psnr").oracle(seeds=[0, 1, 2, 3])["actions"]
    assert agent.sequence == expected
    with pytest.raises(ValueError, match="seed 5 is a replicate of the test instance 'science'"):
        make_agent("transfer", train_seeds=[0, 5]).prepare(env)


def test_an_agent_without_training_instances_is_told_so(small_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(small_table["path"]), objective="psnr")
    with pytest.raises(ValueError, match=r"UCBAgent\(train_episodes=3\) tunes on a table's training instances"):
        make_agent("ucb", train_episodes=3).prepare(env)
    live = gym.make("LossAgent/SuperResolution-v0", stage_iters=1, max_stages=1)
    with pytest.raises(ValueError, match="replays no table"):
        make_agent("llm", model="local", examples=2).prepare(live)
    live.close()
    with pytest.raises(ValueError, match="on_test"):
        make_agent("ucb", train_episodes=3, on_test="thaw")
    with pytest.raises(ValueError, match="examples"):
        make_agent("llm", model="local", examples=-1)


def test_a_trained_bandit_keeps_one_table_per_stage_and_freezes_it(instance_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="psnr", instances="test")
    agent = make_agent("ucb", train_episodes=30)
    agent.prepare(env)
    assert len(agent.cores) == 2 and all(core.pulls.sum() == 30 for core in agent.cores)
    pulls = [core.pulls.copy() for core in agent.cores]
    trajectory = run_episode(env, agent, seed=1)
    assert [core.pulls.tolist() for core in agent.cores] == [p.tolist() for p in pulls]  # frozen: no update
    best = [int(np.nanargmax(core.means)) for core in agent.cores]
    assert [s.preset for s in trajectory.stages] == [env.unwrapped.preset_names[a] for a in best]
    assert all(s.notes["table"] == "frozen" for s in trajectory.stages)


def test_the_llm_examples_are_in_its_prompt(instance_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="psnr", instances="test")
    agent = make_agent("llm", model="local", examples=3)
    agent.prepare(env)
    statics = [run for run in agent.example_runs if len(set(run.played)) == 1]
    assert [run.played for run in statics] == [("pixel", "pixel"), ("edges", "edges")]
    assert {run.instance for run in statics} == {"photos"}  # compared on one problem
    agent.reset(AgentSpec.from_env(env), 0)
    text = agent.messages()[1].content
    assert "## Example runs on training problems" in text
    for run in agent.example_runs:
        assert f"| {run.instance} | {', '.join(run.played)} |" in text
    zero_shot = make_agent("llm", model="local")
    zero_shot.reset(AgentSpec.from_env(env), 0)
    assert "Example runs" not in zero_shot.messages()[1].content and zero_shot.budget() is None
    assert "ANOTHER objective" not in text


def test_the_llm_examples_of_the_new_objective_track_name_the_objective_they_were_played_under(instance_table):
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="ssim",
                   train_objective="psnr", instances="test")
    agent = make_agent("llm", model="local", examples=2)
    agent.prepare(env)
    psnr = env.unwrapped.with_instances("train")
    assert psnr.objective.metric_names == ("psnr",)
    _, info = psnr.reset(seed=0)
    assert agent.example_runs[0].start == info["objective"]  # J of the tuning objective, psnr
    agent.reset(AgentSpec.from_env(env), 0)
    text = agent.messages()[1].content
    assert "under ANOTHER objective than yours" in text and psnr.objective.describe().strip() in text


def test_live_training_agrees_with_the_table_exactly_on_this_machine(instance_table):
    checks = check_against_live(str(instance_table["path"]), samples=3, seed=1)
    assert {c.seed for c in checks} and all(c.distance == 0.0 for c in checks)


@pytest.mark.parametrize(
    "edit, match",
    [
        (("replicates = 2\n", ""), "needs replicates"),
        (("replicates = 2\n", "replicates = 2\nseeds = [0, 1]\n"), "takes replicates, not seeds"),
        (('split = "train"', 'split = "dev"', 1), "split"),
        (('name = "scenes"', 'name = "photos"'), "instance names must be unique"),
        (("kwargs = { dataset = \"skimage:photos\" }", "kwargs = { datasets = \"x\" }"), "datasets"),
    ],
)
def test_a_bad_instances_section_is_named(edit, match):
    text = INSTANCE_TABLE_TOML.replace(*edit)
    with pytest.raises(SuiteError, match=match):
        table_spec_from_text(text)


def test_a_header_whose_seeds_are_not_its_instances_is_refused(instance_table, tmp_path):
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(instance_table["path"].read_bytes())
    db = sqlite3.connect(copy)
    with db:
        db.execute("UPDATE header SET value = ? WHERE key = 'seeds'", (json.dumps([0, 1, 2, 3, 4, 5, 7, 6]),))
    db.close()
    with pytest.raises(TableFormatError, match="every instance's seeds, in instance order"):
        load_table(copy)


def test_bad_instance_and_tree_arguments_name_what_is_allowed(instance_table):
    analysis = TableAnalysis(instance_table["path"], "psnr")
    with pytest.raises(ValueError, match=r"no instance 'nope'. Allowed: \['photos', 'scenes', 'science', 'noisy'\]"):
        analysis.oracle(instance="nope")
    with pytest.raises(ValueError, match="no instance 'nope'"):
        analysis.replicates("nope")
    with pytest.raises(ValueError, match="give one"):
        analysis.oracle(instance="science", seeds=[4])
    with pytest.raises(ValueError, match="Seed 99 is not in the table"):
        analysis.values([99], [0], "test")
    with pytest.raises(ValueError, match=r"Actions \[2\] are not presets"):
        analysis.values([4], [2], "test")
    with pytest.raises(ValueError, match=r"Actions \[True, 1.7\] are not presets"):  # not a bool, not a float
        analysis.values([4], [True, 1.7], "test")


def test_the_shipped_tabular_suite_is_its_tables_recipe():
    """The shipped tables are what their suites say they build, and the suites play their
    test instances."""
    from benchmarks.suites.suite import load_suite

    for name, table_name in (("tabular", "lossbench3"), ("tabular-v2", "lossbench")):
        _check_shipped(load_suite, name, table_name)


def _check_shipped(load_suite, name, table_name):
    suite = load_suite(name)  # checks the table holds its budget and objectives
    assert suite.env_kwargs == {"table": table_name, "instances": "test"}
    spec = load_table_spec(name)
    table = load_table(table_name)
    assert table.stages == spec.stages == suite.max_stages
    assert table.preset_names == tuple(spec.presets) and table.metrics == tuple(spec.metrics)
    assert [(i.name, i.split, i.seeds) for i in table.instances] == [
        (i.name, i.split, i.seeds) for i in spec.instances
    ]
    for inst, entry in zip(table.instances, spec.instances):
        assert inst.env_kwargs == spec.env_for(entry.seeds[0])[1]
    assert table.header["build"]["seconds"] > 0 and table.header["build"]["command"].startswith("lossagent tabulate")


def test_check_env_passes_on_a_table_of_instances(instance_table):
    import warnings

    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(replay(instance_table, objective={"psnr": 1.0, "ssim": 5.0}, instances="test"))


def test_only_the_table_loader_and_writer_read_the_format_version():
    """One data model: a format 1 table is read as one instance, and nothing above the
    loader (format, schema) and the writer (build) asks which format a table was."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    allowed = {"lossagent_env/tabular/format.py", "lossagent_env/tabular/schema.py", "lossagent_env/tabular/build.py"}
    readers = {
        str(path.relative_to(root))
        for package in ("lossagent_env", "agents", "benchmarks")
        for path in (root / package).rglob("*.py")
        if "format_version" in path.read_text(encoding="utf-8")
    }
    assert readers <= allowed, readers - allowed


@pytest.mark.rl
def test_ppo_of_the_new_objective_track_observes_what_means_the_same_under_both_objectives(instance_table):
    pytest.importorskip("stable_baselines3")
    env = gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective={"psnr": 1.0, "ssim": 5.0},
                   train_objective="psnr", instances="test")
    agent = make_agent("ppo", train_steps=64, n_steps=16)
    trajectory = run_episode(env, agent, seed=0)  # trained under psnr (one metric), plays under two
    assert agent.without_metrics and len(trajectory.stages) == 2
    space = env.observation_space
    assert agent.model.observation_space.shape == (gym.spaces.flatdim(space) - len(space["metrics"].spaces),)
    tuned = make_agent("ppo", train_steps=64, n_steps=16)
    run_episode(gym.make("LossAgent/Tabular-v0", table=str(instance_table["path"]), objective="psnr",
                         instances="test"), tuned, seed=0)
    assert not tuned.without_metrics  # the tuned track observes the metrics too


@pytest.mark.rl
def test_ppo_closes_the_env_its_factory_made_on_a_table_of_instances(instance_table):
    """PPO trains on the table's training view; the env it made itself is the one it closes."""
    pytest.importorskip("stable_baselines3")
    from agents.ppo import PPOAgent

    made = []

    class Closing(gym.Wrapper):
        closed = False

        def close(self):
            self.closed = True
            super().close()

    def factory():
        made.append(Closing(replay(instance_table, objective="psnr", instances="test")))
        return made[-1]

    PPOAgent(train_steps=32, n_steps=16, n_epochs=1).train(factory)
    assert len(made) == 1 and made[0].closed
