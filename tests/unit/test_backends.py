"""The backends' shared task and collector: rows, failed runs and crashed tasks."""

from __future__ import annotations

import queue

import torch

from benchmarks import backends
from benchmarks.errors import RunFailure
from benchmarks.runs import RunSpec


def _spec(name: str, stages: int = 2) -> RunSpec:
    return RunSpec(
        name=name, suite="t", env_id="Env", env_kwargs={}, agent="a", agent_name="a",
        agent_kwargs={}, objective="psnr", objective_spec="psnr", seed=0,
        max_stages=stages, stage_iters=1,
    )


def _fake_execute_run(spec, out, emit):
    """Emits one row per stage; a run named ``bad`` raises after its first row."""
    for stage in range(1, spec.max_stages + 1):
        emit({"run": spec.name, "stage": stage})
        if spec.name == "bad":
            raise ValueError("no agent named 'rndom'")
    return spec.max_stages


class _ListQueue(list):
    def put(self, message):
        self.append(message)


def test_run_task_sends_rows_then_done_or_error(monkeypatch):
    monkeypatch.setattr(backends, "execute_run", _fake_execute_run)
    messages = _ListQueue()
    assert backends.run_task(_spec("ok"), "out", messages) == 2
    assert backends.run_task(_spec("bad"), "out", messages) == 0
    assert [m[:2] for m in messages] == [
        ("row", "ok"), ("row", "ok"), ("done", "ok"), ("row", "bad"), ("error", "bad"),
    ]
    failure = messages[-1][2]
    assert isinstance(failure, RunFailure) and failure.run == "bad"
    assert failure.error == "ValueError: no agent named 'rndom'" and "Traceback" in failure.traceback


def test_inline_writes_rows_as_they_come_and_runs_past_a_failure(monkeypatch):
    monkeypatch.setattr(backends, "execute_run", _fake_execute_run)
    written = []
    before = torch.get_num_threads()
    failures = backends.run_inline([_spec("a"), _spec("bad"), _spec("c")], "out", written.append, threads=1)
    assert [(r["run"], r["stage"]) for r in written] == [("a", 1), ("a", 2), ("bad", 1), ("c", 1), ("c", 2)]
    assert [f.run for f in failures] == ["bad"]
    assert torch.get_num_threads() == before


def test_watch_keeps_the_rows_of_a_crashed_task_and_fails_its_run():
    messages = queue.Queue()
    for message in [("row", "a", {"run": "a"}), ("done", "a", 1), ("row", "b", {"run": "b"})]:
        messages.put(message)
    written = []
    collector = backends._Collector(messages, written.append, [_spec("a"), _spec("b")])
    tasks = {"ref-a": _spec("a"), "ref-b": _spec("b")}
    errors = {"ref-a": None, "ref-b": RuntimeError("worker killed")}
    failures = collector.watch(tasks, lambda handles: handles, errors.get, reason="ended")
    assert written == [{"run": "a"}, {"run": "b"}]
    assert [(f.run, f.error) for f in failures] == [("b", "RuntimeError: worker killed")]
    assert not tasks and not collector.open_runs


def test_watch_fails_runs_left_open_when_every_task_returned():
    messages = queue.Queue()
    messages.put(("row", "a", {"run": "a"}))
    written = []
    collector = backends._Collector(messages, written.append, [_spec("a")])
    failures = collector.watch({"ref": _spec("a")}, lambda h: h, lambda h: None, reason="ended early")
    assert written == [{"run": "a"}]
    assert failures == [RunFailure("a", "ended early", "")]


def test_workers_take_the_gpus_in_turn():
    assert [backends.worker_device("cuda", i, 4) for i in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert backends.worker_device("auto", 3, 2) == "cuda:1"
    assert backends.worker_device("cuda", 3, 1) is None  # one GPU: the suite's setting
    assert backends.worker_device("cuda:1", 0, 4) is None  # a named GPU is kept
    assert backends.worker_device("cpu", 1, 4) is None


def test_run_task_trains_on_the_device_it_is_given(monkeypatch):
    seen = []
    monkeypatch.setattr(backends, "execute_run", lambda spec, out, emit: seen.append(spec.env_kwargs) or 0)
    backends.run_task(_spec("ok"), "out", _ListQueue(), device="cuda:3")
    assert seen == [{"device": "cuda:3"}]


def test_ray_gpu_requests():
    def specs(device, n=4):
        return [_spec(f"r{i}") for i in range(n)] if device is None else [
            backends.RunSpec(**{**_spec(f"r{i}").__dict__, "env_kwargs": {"device": device}}) for i in range(n)]

    assert backends.ray_gpus(specs("cpu"), {"CPU": 8, "GPU": 2}, 2, 8) == 0.0
    assert backends.ray_gpus(specs("auto"), {"CPU": 8, "GPU": 2}, 2, 8) == 0.5  # 4 at once share 2
    assert backends.ray_gpus(specs("cuda"), {"CPU": 8, "GPU": 8}, 2, 8) == 1.0  # at most one each
    assert backends.ray_gpus(specs("auto"), {"CPU": 8}, 2, 8) == 0.0  # auto falls back to the CPU
    import pytest

    from benchmarks.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="no GPU"):
        backends.ray_gpus(specs("cuda"), {"CPU": 8}, 2, 8)
