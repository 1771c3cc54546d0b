"""The executor that bench and tabulate share: messages and results in order, failures,
dead workers, GPU assignment, and the same answers inline, in a pool and on Ray."""

from __future__ import annotations

import functools
import os
import queue
import time

import pytest
import torch

from benchmarks.errors import BenchmarkError
from benchmarks.execution import executor as ex
from benchmarks.execution.runs import RunSpec, run_task


def count_up(item: int, context: ex.Context) -> int:
    """Sends 1..item, then returns item * 10; item 3 raises after its first message."""
    for i in range(1, item + 1):
        context.send(i)
        if item == 3:
            raise ValueError("no agent named 'rndom'")
    return item * 10


def die(item: int, context: ex.Context) -> tuple[int, str | None]:
    """Item 2's worker process dies after one message (as a SIGKILLed worker would); the
    others return their torch threads and device."""
    context.send("started")
    if item == 2:
        time.sleep(1.0)  # the message leaves the worker's queue buffer first
        os._exit(1)
    return torch.get_num_threads(), context.device


def _collect(executor: ex.Executor, task, items):
    messages, results = [], []
    failures = executor.map(
        task, [(i, i) for i in items],
        on_message=lambda key, payload: messages.append((key, payload)),
        on_result=lambda key, result: results.append((key, result)),
    )
    return messages, results, failures


def test_inline_hands_on_messages_then_results_and_runs_past_a_failure():
    before = torch.get_num_threads()
    messages, results, failures = _collect(ex.Executor(workers=1, threads=1), count_up, [2, 3, 1])
    assert messages == [(2, 1), (2, 2), (3, 1), (1, 1)]
    assert results == [(2, 20), (1, 10)]
    assert [(f.key, f.error) for f in failures] == [(3, "ValueError: no agent named 'rndom'")]
    assert "Traceback" in failures[0].traceback
    assert torch.get_num_threads() == before


def test_a_pool_gives_what_inline_gives_with_each_tasks_messages_before_its_result():
    messages, results, failures = _collect(ex.Executor(workers=2, threads=1), count_up, [2, 3, 1, 4])
    assert sorted(results) == [(1, 10), (2, 20), (4, 40)]
    assert [(f.key, f.error) for f in failures] == [(3, "ValueError: no agent named 'rndom'")]
    for key in (1, 2, 4):
        assert [p for k, p in messages if k == key] == list(range(1, key + 1))
    assert [p for k, p in messages if k == 3] == [1]


def test_a_dead_worker_fails_its_task_and_keeps_its_messages():
    messages, results, failures = _collect(ex.Executor(workers=2, threads=1), die, [1, 2])
    assert (2, "started") in messages
    assert 2 in {f.key for f in failures} and all(key != 2 for key, _ in results)
    # a dead worker breaks the pool; a task it had not finished fails too, never silently
    assert {key for key, _ in results} | {f.key for f in failures} == {1, 2}
    assert all(result == (1, None) for _, result in results)  # the workers' threads, no GPU


def test_an_exception_in_the_callers_handler_stops_the_map():
    def boom(key, result):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ex.Executor(workers=2, threads=1).map(count_up, [(i, i) for i in (1, 2, 4)], on_result=boom)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers=0"),
        ({"workers": True}, "workers=True"),
        ({"threads": 0}, "threads=0"),
        ({"backend": "slurm"}, "backend='slurm'"),
        ({"ray_address": "127.0.0.1:1"}, "used only by the ray backend"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ex.Executor(**kwargs)


def test_the_collector_fails_tasks_left_open_when_every_handle_returned():
    messages = queue.Queue()
    messages.put(("message", "a", {"run": "a"}))
    seen = []
    collector = ex._Collector(messages, ["a"], lambda k, p: seen.append(p), lambda k, r: None)
    failures = collector.watch({"ref": "a"}, lambda h: h, lambda h: None, reason="ended early")
    assert seen == [{"run": "a"}]
    assert failures == [ex.TaskFailure("a", "ended early", "")]


def test_workers_take_the_gpus_in_turn():
    assert [ex.worker_device("cuda", i, 4) for i in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert ex.worker_device("auto", 3, 2) == "cuda:1"
    assert ex.worker_device("cuda", 3, 1) is None  # one GPU: the configured setting
    assert ex.worker_device("cuda:1", 0, 4) is None  # a named GPU is kept
    assert ex.worker_device("cpu", 1, 4) is None


def test_a_run_trains_on_the_device_its_worker_is_given(monkeypatch):
    import benchmarks.execution.runs as runs

    seen = []
    monkeypatch.setattr(runs, "execute_run", lambda spec, out, emit: seen.append(spec.env_kwargs) or 0)
    spec = RunSpec(
        name="r", suite="t", env_id="Env", env_kwargs={"device": "cuda"}, agent="a", agent_name="a",
        agent_kwargs={}, objective="psnr", objective_spec="psnr", seed=0, max_stages=1, stage_iters=1,
    )
    task = functools.partial(run_task, out=None)
    task(spec, ex.Context("r", queue.Queue(), device="cuda:3"))
    task(spec, ex.Context("r", queue.Queue()))
    assert seen == [{"device": "cuda:3"}, {"device": "cuda"}]


def test_ray_gpu_requests():
    assert ex.ray_gpus("cpu", 4, {"CPU": 8, "GPU": 2}, 2, 8) == 0.0
    assert ex.ray_gpus("auto", 4, {"CPU": 8, "GPU": 2}, 2, 8) == 0.5  # 4 at once share 2
    assert ex.ray_gpus("cuda", 4, {"CPU": 8, "GPU": 8}, 2, 8) == 1.0  # at most one each
    assert ex.ray_gpus("auto", 4, {"CPU": 8}, 2, 8) == 0.0  # auto falls back to the CPU
    with pytest.raises(BenchmarkError, match="no GPU"):
        ex.ray_gpus("cuda", 4, {"CPU": 8}, 2, 8)


@pytest.mark.ray
def test_ray_gives_what_inline_gives():
    pytest.importorskip("ray")
    with ex.Executor("ray", workers=2, threads=1) as executor:
        messages, results, failures = _collect(executor, count_up, [2, 3, 1])
    assert sorted(results) == [(1, 10), (2, 20)]
    assert [(f.key, f.error) for f in failures] == [(3, "ValueError: no agent named 'rndom'")]
    assert sorted(messages) == [(1, 1), (2, 1), (2, 2), (3, 1)]
