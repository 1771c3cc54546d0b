"""The embedded model's server: it proves it is itself, it dies with its caller, and a
patch it cannot apply is said once in the bench's output and in report.md.

Everything here is real: real sockets held by another program, real ``lossagent``
processes killed with real signals, the installed llama-cpp-python reporting another
release inside the server process. Processes are found through ``/proc`` (Linux).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lossagent_env.chat.local import LocalLLMServer
from lossagent_env.chat.local import server as server_module
from lossagent_env.chat.local.handshake import READY_PATH
from lossagent_env.chat.local.patches import TESTED_VERSIONS
from tests.integration.test_local_llm import needs_local_llm

REPO = Path(__file__).resolve().parents[2]
SERVE = "lossagent_env.chat.local.serve"
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)")


# ----------------------------------------------------------------- processes
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # state, ppid, ...


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _servers_of(pid: int) -> list[int]:
    return [p for p in _descendants(pid) if SERVE in _cmdline(p)]


def _wait_for(condition: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (code {proc.returncode}) before {what}:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _environ(tmp: Path) -> dict[str, str]:
    """The user's environment, with this test's own folder for temporary files."""
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "LOSSAGENT_LLM"}
    return {**env, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}


def _server_folders(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("lossagent-llama-*"))


# ----------------------------------------------------------------- another program on the port
class _Answers(BaseHTTPRequestHandler):
    """Answers every GET as a llama.cpp server would, with a made-up proof."""

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps({"object": "list", "data": [{"id": "smollm2-135m-instruct"}], "proof": "0" * 64}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _listening(host: str) -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer((host, 0), _Answers)
    httpd.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(params=["127.0.0.1", "0.0.0.0"], ids=["loopback", "every-interface"])
def other_program(request: pytest.FixtureRequest) -> Iterator[ThreadingHTTPServer]:
    """Another program that listens on a port (of the loopback interface, or of every
    interface) and answers like the server would."""
    with _listening(request.param) as httpd:
        yield httpd


@pytest.mark.local_llm
@needs_local_llm
def test_start_on_a_port_another_program_listens_on_fails_naming_the_port(other_program):
    port = other_program.server_address[1]
    server = LocalLLMServer(port=port, startup_timeout=60.0)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"another program listens on port {port}\b.*port=None"):
        server.start()
    assert time.monotonic() - t0 < 10  # refused before the model loads
    assert not server.running
    assert other_program.paths == []  # nothing was asked of it


@pytest.mark.local_llm
@needs_local_llm
def test_a_port_chosen_by_the_system_is_held_from_the_start_and_proven():
    with _listening("127.0.0.1") as other_program:
        _start_on_a_free_port(other_program)


def _start_on_a_free_port(other_program: ThreadingHTTPServer) -> None:
    server = LocalLLMServer(n_threads=1)
    try:
        url = server.start()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port != other_program.server_address[1]
        assert server.patches  # the readiness answer came, with the proof of this start's token
        # the listening socket is the server process's own: the caller holds none
        assert server.pid is not None and port in _listening_ports(server.pid)
        assert port not in _listening_ports(os.getpid())
    finally:
        server.stop()
    assert other_program.paths == []


def _listening_ports(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_readiness_answer_without_the_proof_is_refused(other_program):
    """What start() does when something answers the readiness route without the proof
    of its token (for example another program that took the port of a server that died)."""
    host, port = other_program.server_address[:2]
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}{READY_PATH}"
    with pytest.raises(server_module._Impostor, match="without the proof"):
        server_module._ready_answer(url, "a-token", timeout=5.0)
    assert other_program.paths and other_program.paths[0].startswith(f"{READY_PATH}?challenge=")
    # and a port where nothing listens is "no answer yet", not a server
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        nobody = free.getsockname()[1]
    assert server_module._ready_answer(f"http://127.0.0.1:{nobody}{READY_PATH}", "a-token", timeout=2.0) is None


# ----------------------------------------------------------------- never outlives its caller
_STARTED_FROM_A_THREAD = textwrap.dedent(
    """
    import sys, threading, time
    from lossagent_env.chat.local import LocalLLMServer
    server = LocalLLMServer(n_threads=1)
    starter = threading.Thread(target=server.start)  # as bench starts it: in the background
    starter.start()
    starter.join()  # the thread that started the server has ended
    print(server.pid, server.log_path.parent, flush=True)
    time.sleep(600)
    """
)


@linux_only
@pytest.mark.local_llm
@needs_local_llm
def test_the_server_outlives_the_thread_that_started_it_but_not_its_process(tmp_path: Path):
    parent = subprocess.Popen(
        [sys.executable, "-c", _STARTED_FROM_A_THREAD], stdout=subprocess.PIPE, text=True, env=_environ(tmp_path / "tmp"),
    )
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        pid, folder = int(line.split()[0]), Path(line.split()[1])
        time.sleep(1.5)
        assert _alive(pid), "the server died with the thread that started it"
        assert folder.is_dir()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: not _alive(pid), 5.0, f"the server (pid {pid}) to exit after its parent's SIGKILL")
        _wait_for(lambda: not folder.exists(), 5.0, f"the server's folder {folder} to be removed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


SUITE = """\
name = "server-lifetime"
seeds = [0]
objectives = ["psnr"]

[env]
id = "LossAgent/SuperResolution-v0"
kwargs = {{ scale = 2, patch_size = 32, batch_size = 2, eval_images = 2, eval_size = 32, device = "cpu", losses = ["l1", "ssim"] }}

[budget]
max_stages = {stages}
stage_iters = 1
{agents}"""
TRAINING = '\n[[agents]]\nname = "fixed"\n\n[[agents]]\nname = "random"\n'
LLM = '\n[[agents]]\nname = "llm"\nkwargs = { model = "local" }\n'
LOSSAGENT = [sys.executable, "-m", "benchmarks.cli"]


@linux_only
@pytest.mark.local_llm
@needs_local_llm
def test_bench_killed_during_the_llm_runs_leaves_no_process_and_no_folder(tmp_path: Path):
    """``kill -9`` of ``lossagent bench`` while the embedded model answers: the pool ran
    first, the server was started from a background thread, and nothing of the bench is
    alive seconds later."""
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(stages=8, agents=TRAINING + LLM))
    out, tmp = tmp_path / "bench", tmp_path / "tmp"
    bench = subprocess.Popen(
        [*LOSSAGENT, "bench", "--suite", str(suite), "--out", str(out), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environ(tmp),
    )
    try:
        _wait_for(
            lambda: any(r["agent"] == "llm" for r in _rows(out / "results.jsonl")), 300.0, "the first llm row", bench,
        )
        servers = _servers_of(bench.pid)
        assert len(servers) == 1, f"expected the embedded model's server under the bench: {servers}"
        everything = _descendants(bench.pid)
        assert _server_folders(tmp)
        bench.send_signal(signal.SIGKILL)
        bench.wait(timeout=10)
        _wait_for(
            lambda: not any(_alive(p) for p in everything), 10.0,
            f"every process of the bench to end: {[(p, _cmdline(p)) for p in everything if _alive(p)]}",
        )
        _wait_for(lambda: not _server_folders(tmp), 5.0, "the server's folder to be removed")
        assert not any(r["stage"] == 8 for r in _rows(out / "results.jsonl") if r["agent"] == "llm")  # killed mid-run
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()


@linux_only
@pytest.mark.local_llm
@needs_local_llm
def test_run_terminated_with_sigterm_stops_its_server_and_removes_its_folder(tmp_path: Path):
    out, tmp = tmp_path / "run", tmp_path / "tmp"
    run = subprocess.Popen(
        [
            *LOSSAGENT, "run", "--agent", "llm", "--llm", "local", "--stages", "12", "--iters", "1", "--out", str(out),
            "--set", "patch_size=32", "--set", "batch_size=2", "--set", "eval_images=2", "--set", "eval_size=32",
            "--set", 'losses=["l1", "ssim"]',
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environ(tmp),
    )
    try:
        _wait_for(lambda: _rows(out / "results.jsonl"), 300.0, "the first stage", run)
        (server,) = _servers_of(run.pid)
        (folder,) = _server_folders(tmp)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == -signal.SIGTERM  # it still ends as SIGTERM ends a process
        # stopped by the process itself before it ended, not later by the server's own watch
        assert not _alive(server), f"the server (pid {server}) outlived `lossagent run`"
        assert not folder.exists() and not _server_folders(tmp)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


# ----------------------------------------------------------------- a patch that cannot apply
_CHANGED_GENERATE = textwrap.dedent(
    """
    # Every Python process of this test imports a llama-cpp-python whose Llama.generate is
    # not the one the jump_forward patch was tested with: a wrapper whose source shows no
    # send() of the generator (the stock answers stay the same).
    from llama_cpp.llama import Llama

    _stock = Llama.generate

    def generate(self, *args, **kwargs):
        return (yield from _stock(self, *args, **kwargs))

    Llama.generate = generate
    """
)


@pytest.mark.local_llm
@needs_local_llm
def test_a_patch_that_cannot_apply_is_one_warning_line_in_the_bench_output_and_in_the_report(tmp_path: Path):
    """The check runs in the server process against what it imports; there, one patch
    cannot apply, and the user reads so once on stderr and once in report.md. (Another
    release of llama-cpp-python leaves out all three: tests/unit/test_local_patches.py;
    its stock sampler takes a minute a decision here.)"""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_CHANGED_GENERATE)
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(stages=1, agents=LLM.replace('"local"', '"local", rationale_chars = 20')))
    out = tmp_path / "bench"
    env = _environ(tmp_path / "tmp")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    result = subprocess.run(
        [*LOSSAGENT, "bench", "--suite", str(suite), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "runs without its llama-cpp-python patches" in line]
    assert len(warned) == 1, result.stderr
    assert "patches jump_forward (" in warned[0] and "send() of Llama.generate's generator" in warned[0]
    assert "bounded_numbers" not in warned[0] and "grammar_first" not in warned[0].split("(")[0]
    assert f"llama-cpp-python=={TESTED_VERSIONS[0]}" in warned[0]
    report = (out / "report.md").read_text()
    in_report = [line for line in report.splitlines() if "runs without its llama-cpp-python patches" in line]
    assert len(in_report) == 1 and in_report[0].startswith("- Warning: ") and "send() of" in in_report[0]
    # the agent recorded it with its decisions (where report.md read it from)
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 1
    assert all(len(r["notes"]["warnings"]) == 1 and r["notes"]["warnings"][0] in warned[0] for r in rows)
