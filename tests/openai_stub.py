"""A scripted OpenAI-compatible ``/v1/chat/completions`` endpoint on loopback, for tests.

:class:`ScriptedServer` (stdlib ``http.server`` on 127.0.0.1, port 0, in a daemon thread)
answers each request with the next step of its script, in the OpenAI response format,
and records what it received. A step is a dict built with the helpers below:

* :func:`tool_call` - a function call to the server's ``tool_name`` with these arguments
  (a dict, sent as JSON, or a raw string, e.g. deliberately malformed JSON);
* :func:`content` - a plain assistant message, no function call;
* :func:`status` - an HTTP error status with an OpenAI-style error body;
* :func:`delayed` - any of those, sent only after sleeping (to outlast a client timeout).

Once the script is used up, every further request gets HTTP 500 "script exhausted".
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

#: The token usage reported with every successful reply.
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


def tool_call(arguments: dict | str) -> dict:
    """A reply calling the server's tool; a dict is sent as JSON, a string as it is."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"tool_arguments": text}


def content(text: str) -> dict:
    """A plain assistant reply without a function call."""
    return {"content": text}


def status(code: int, message: str) -> dict:
    """An HTTP error reply with an OpenAI-style error body."""
    return {"status": code, "message": message}


def delayed(seconds: float, step: dict) -> dict:
    """``step``, sent only after ``seconds`` (a client that gave up by then is ignored)."""
    return {"sleep": seconds, **step}


class ScriptedServer:
    """An OpenAI-compatible chat-completions endpoint replying from a script.

    ``requests`` holds ``{"path", "body"}`` for every request received (``bodies`` just
    the JSON bodies) and ``authorization`` the ``Authorization`` header of each. Use it as
    a context manager: the server runs inside the ``with`` block.
    """

    def __init__(self, script: list[dict], *, tool_name: str = "LossWeights"):
        self.script = list(script)
        self.tool_name = tool_name
        self.requests: list[dict] = []
        self.authorization: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body})
                    server.authorization.append(self.headers.get("Authorization", ""))
                    number = len(server.requests)
                    step = server.script.pop(0) if server.script else status(500, "script exhausted")
                if "sleep" in step:
                    time.sleep(step["sleep"])
                code, payload = server._reply(step, body, number)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected for slow replies

            def log_message(self, format, *args):  # keep the test output quiet
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _reply(self, step: dict, body: dict, number: int) -> tuple[int, dict]:
        """The HTTP status and JSON payload answering request ``number`` with ``step``."""
        if "status" in step:
            code = step["status"]
            return code, {"error": {"message": step["message"], "type": "test_error", "code": code}}
        message: dict = {"role": "assistant", "content": step.get("content")}
        if "tool_arguments" in step:
            message["tool_calls"] = [
                {
                    "id": f"call_{number}",
                    "type": "function",
                    "function": {"name": self.tool_name, "arguments": step["tool_arguments"]},
                }
            ]
        return 200, {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model", "test-model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if "tool_arguments" in step else "stop",
                }
            ],
            "usage": USAGE,
        }

    @property
    def bodies(self) -> list[dict]:
        """The JSON body of every request received, in order."""
        return [r["body"] for r in self.requests]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
