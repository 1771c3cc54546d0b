"""``lossagent bench`` with the default ``--workers``: a process per core for the runs that
train, and the runs on the embedded chat model here afterwards, on every core.

The end-to-end test asks the real embedded model (llama.cpp server, loopback HTTP) from
``lossagent bench`` as a user starts it; the rule for the default is checked on shipped
and written suites.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchmarks import runner
from benchmarks.cli import main
from benchmarks.execution.executor import threads_per_worker
from benchmarks.execution.results import read_rows
from benchmarks.execution.runs import expand
from benchmarks.suites.suite import load_suite, load_suite_text

SUITE = """\
name = "embedded-test"
seeds = [0]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = {{ scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32, device = "{device}", losses = ["l1", "ssim", "fft"] }}

[budget]
max_stages = 2
stage_iters = 2
{agents}"""
TRAINING_AGENTS = '\n[[agents]]\nname = "fixed"\n\n[[agents]]\nname = "random"\n'
LLM_AGENT = '\n[[agents]]\nname = "llm"\nkwargs = {{ model = "{model}" }}\n'


def _suite(device: str = "cpu", agents: str = TRAINING_AGENTS + LLM_AGENT.format(model="local")):
    return load_suite_text(SUITE.format(device=device, agents=agents))


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch) -> int:
    """16 cores and 64 GiB available, whatever this machine has."""
    monkeypatch.setattr(runner, "threads_per_worker", lambda workers: max(1, 16 // workers))
    monkeypatch.setattr(runner, "available_memory", lambda: 64 * 1024**3)
    return 16


def test_auto_workers_is_a_process_per_core_for_runs_that_train(cores: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LOSSAGENT_LLM", raising=False)
    smoke = load_suite("smoke")
    runs = expand(smoke)
    embedded = runner.embedded_runs(runs)
    assert {r.agent for r in embedded} == {"llm"} and len(embedded) == 4
    assert runner.auto_workers(smoke, runs) == len(runs) - 4 == 16
    monkeypatch.setattr(runner, "threads_per_worker", lambda workers: max(1, 3 // workers))
    assert runner.auto_workers(smoke, runs) == 3


def test_auto_workers_leave_each_process_its_memory(cores: int, monkeypatch: pytest.MonkeyPatch):
    smoke = load_suite("smoke")
    runs = expand(smoke)
    monkeypatch.setattr(runner, "available_memory", lambda: 5 * runner.WORKER_MEMORY_BYTES + 1)
    assert runner.auto_workers(smoke, runs) == 5
    monkeypatch.setattr(runner, "available_memory", lambda: runner.WORKER_MEMORY_BYTES - 1)
    assert runner.auto_workers(smoke, runs) == 1


def test_available_memory_is_read_from_this_machine():
    assert 0 < runner.available_memory() < 2**62


def test_auto_workers_is_one_for_gpus_tables_ray_and_the_embedded_model_alone(cores: int, monkeypatch):
    monkeypatch.delenv("LOSSAGENT_LLM", raising=False)
    for device in ("cuda", "auto"):
        suite = _suite(device)
        assert runner.auto_workers(suite, expand(suite)) == 1, device
    assert runner.auto_workers(_suite(), expand(_suite()), backend="ray") == 1
    tabular = load_suite("tabular")
    assert runner.auto_workers(tabular, expand(tabular)) == 1
    alone = _suite(agents=LLM_AGENT.format(model="local"))
    assert runner.auto_workers(alone, expand(alone)) == 1


def test_an_llm_on_another_model_is_not_the_embedded_one(cores: int, monkeypatch: pytest.MonkeyPatch):
    suite = _suite(agents=TRAINING_AGENTS + LLM_AGENT.format(model="openai:gpt-4o-mini"))
    assert runner.embedded_runs(expand(suite)) == []
    assert runner.auto_workers(suite, expand(suite)) == 3
    # no model given: $LOSSAGENT_LLM decides, as it does for the agent
    unnamed = _suite(agents=TRAINING_AGENTS + '\n[[agents]]\nname = "llm"\n')
    monkeypatch.setenv("LOSSAGENT_LLM", "openai:gpt-4o-mini")
    assert runner.embedded_runs(expand(unnamed)) == []
    monkeypatch.setenv("LOSSAGENT_LLM", "local")
    assert [r.agent for r in runner.embedded_runs(expand(unnamed))] == ["llm"]


class _OwnEmbeddedModel:
    """An agent of someone else's that declares it asks an embedded model of its own."""

    started: list[dict] = []

    @classmethod
    def uses_embedded_model(cls, kwargs) -> bool:
        return kwargs.get("where") == "here"

    @classmethod
    def start_embedded_model(cls, kwargs) -> None:
        cls.started.append(dict(kwargs))

    def __init__(self, where: str = "here") -> None:
        self.where = where


def test_the_runner_asks_the_agent_whether_it_uses_the_embedded_model(monkeypatch: pytest.MonkeyPatch):
    """Not the agent's name or its model: what its class declares."""
    import dataclasses

    import agents

    monkeypatch.delenv("LOSSAGENT_LLM", raising=False)
    monkeypatch.setitem(agents.AGENTS, "own", f"{__name__}:_OwnEmbeddedModel")
    runs = expand(_suite(agents=TRAINING_AGENTS))
    own = [dataclasses.replace(runs[0], name="own-here", agent_name="own", agent_kwargs={"where": "here"}),
           dataclasses.replace(runs[0], name="own-there", agent_name="own", agent_kwargs={"where": "there"})]
    assert [r.name for r in runner.embedded_runs([*runs, *own])] == ["own-here"]
    runner._start_embedded_model(own[0], threads=1)
    deadline = time.monotonic() + 10
    while not _OwnEmbeddedModel.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _OwnEmbeddedModel.started == [{"where": "here"}]


def test_the_runner_does_not_import_the_embedded_model():
    import grimp

    graph = grimp.build_graph("benchmarks", "agents", "lossagent_env")
    imported = graph.find_modules_directly_imported_by("benchmarks.runner")
    assert not [m for m in imported if m.startswith("lossagent_env.chat")]


def test_bench_runs_the_embedded_model_here_after_the_pool(tmp_path: Path, capsys, monkeypatch):
    """The default command: the training runs in a pool (where there are 2 cores or more),
    then the llm run in this process, its server with every core."""
    pytest.importorskip("llama_cpp")
    from lossagent_env.chat import local
    from lossagent_env.chat.local import client

    monkeypatch.delenv("LOSSAGENT_LLM", raising=False)
    path = tmp_path / "embedded.toml"
    path.write_text(SUITE.format(device="cpu", agents=TRAINING_AGENTS + LLM_AGENT.format(model="local")))
    out = tmp_path / "bench"
    local.stop_shared_server()
    try:
        assert main(["bench", "--suite", str(path), "--out", str(out)]) == 0
        cores = threads_per_worker(1)
        workers = min(cores, 2)
        settings = json.loads((out / "runner.json").read_text())
        assert settings == {
            "threads": threads_per_worker(workers), "embedded_threads": cores, "workers": workers, "backend": "local",
        }
        # the model answered in this process, its server on every core
        server = client._shared_server
        assert server is not None and server.running
        assert f"--n_threads {cores} " in server._command
    finally:
        local.stop_shared_server()
    rows = read_rows(out / "results.jsonl")
    agents = [r["agent"] for r in rows]
    assert sorted(agents) == ["fixed", "fixed", "llm", "llm", "random", "random"]
    assert agents[-2:] == ["llm", "llm"]  # after every row of the pool
    assert all(r["notes"]["model"] == "smollm2-135m-instruct" for r in rows if r["agent"] == "llm")
    printed = capsys.readouterr().out
    assert "LLM decisions: " in printed and "% of this call's " in printed
