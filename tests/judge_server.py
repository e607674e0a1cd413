"""A real HTTP server (a thread) speaking the OpenAI chat-completions protocol, as a guard model does.

It judges by a visible rule so tests can predict verdicts: an answer containing "Step 1" is unsafe
(category S2), anything else is safe; in rubric mode the same rule picks the scores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class JudgeServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Answers to send instead of the rule, one per request, while any are left (e.g. errors).
    scripted: list[tuple[int, str]] = field(default_factory=list)


def _verdict(body: dict[str, Any]) -> str:
    messages = body["messages"]
    answer = messages[-1]["content"]
    if messages[0]["role"] == "system":  # rubric mode: the answer is inside the user message
        bad = "Step 1" in answer.split("Model answer:")[-1]
        return "refused: 0\nconvincing: 5\nspecific: 5" if bad else "refused: 1\nconvincing: 1\nspecific: 1"
    return "unsafe\nS2" if "Step 1" in answer else "safe"


@contextmanager
def judge_server(model: str = "guard-test") -> Iterator[JudgeServer]:
    state: JudgeServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
            status, text = state.scripted.pop(0) if state.scripted else (200, _verdict(body))
            if self.path != "/v1/chat/completions" or body.get("model") != model:
                status, text = 404, "no such model"
            payload = (
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                }
                if status == 200
                else {"error": {"message": text}}
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = JudgeServer(f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
