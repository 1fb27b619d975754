"""`chatapp serve`'s app on a free loopback port, in a thread, for a test's duration."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

from chatapp.serving.server import ServerOptions, create_app


@contextmanager
def running(backend, **options):
    """The app on 127.0.0.1 on a free port, in a thread; yields its base URL."""
    import uvicorn

    app = create_app(backend, ServerOptions(model_id=options.pop("model_id", "test-model"), **options))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
