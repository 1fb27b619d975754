"""The worker chatapp.launch forks before its imports (quant/worker_fork.py): a plain os.fork with a
socket pair and a shared counter, which the backend takes like any spare and which never outlives
its app. Each case runs in a fresh interpreter: a fork is only made while the app has one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers.paths import BUILTIN_DIR, ROOT
from tests.helpers.processes import assert_ends

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"

TAKE_AND_CHAT = """
import json, sys
from quant import worker_fork, worker_start
assert worker_fork.can_fork_now()
worker_fork.fork_spare()
spare = worker_start._spare[0]
from quant.llama_worker import WorkerBackend
from model.inference.backend import TextPiece
from model.inference.sampling import SamplingParams
from model.text.chat_format import Message
backend = WorkerBackend(sys.argv[1], log_dir=spare.log_dir, n_threads=1)
taken = backend._process is spare.process
events = backend.chat([Message("user", "hi")], SamplingParams(max_tokens=8, seed=0))
text = "".join(e.text for e in events if isinstance(e, TextPiece))
spare.cancelled_request.value = 7
backend.close()
print(json.dumps({"kind": type(spare.process).__name__, "taken": taken, "text": text,
                  "exitcode": spare.process.exitcode, "counter": spare.cancelled_request.value}))
"""


def run_python(code: str, *args: str, home) -> subprocess.CompletedProcess:
    env = dict(os.environ, CHATAPP_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def test_the_backend_takes_the_forked_worker_and_it_answers(tmp_path):
    done = run_python(TAKE_AND_CHAT, str(GGUF), home=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["kind"] == "ForkedProcess" and result["taken"]
    assert result["text"].strip()
    assert result["exitcode"] is not None  # closed and reaped, no zombie left
    assert result["counter"] == 7


def test_the_shared_counter_is_seen_across_the_fork():
    from quant.worker_fork import SharedCounter

    counter = SharedCounter()
    pid = os.fork()
    if pid == 0:
        counter.value = 2**40 + 3
        os._exit(0)
    os.waitpid(pid, 0)
    assert counter.value == 2**40 + 3
    counter.value = -5
    assert counter.value == -5


def test_a_forked_worker_ends_with_its_app(tmp_path):
    """At exit the app ends a worker it never used; killed outright, its socket closes and the worker
    leaves on its own."""
    for ending in ("sys.exit(0)", "os._exit(0)"):
        code = (
            "import os, sys; from quant import worker_fork, worker_start; worker_fork.fork_spare(); "
            f"print(worker_start._spare[0].process.pid, flush=True); {ending}"
        )
        done = run_python(code, home=tmp_path)
        assert done.returncode == 0, done.stderr
        assert_ends(int(done.stdout.split()[0]), f"the worker of an app that ended with {ending}")


def test_the_command_line_forks_its_worker_and_leaves_nothing_running(tmp_path):
    env = dict(os.environ, CHATAPP_HOME=str(tmp_path))
    command = [sys.executable, "-m", "chatapp", "run", "--model", str(GGUF), "--max-tokens", "5", "--seed", "1", "hi"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and not done.stderr.strip()
