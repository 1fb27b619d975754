"""The `chatapp` command's entry point (pyproject's console script, `python -m
chatapp` and the desktop bundle): chatapp.cli.main, with a Ctrl+C that comes
while the program is still importing (its first ~100 ms, before cli.main's own
handling is in place) ending it quietly with exit code 130 instead of a traceback.
Before this module runs, a Ctrl+C is CPython's own to report (its start, `site`).

A command line that names a GGUF file starts its llama.cpp worker here, before
the argument parser is even imported: the worker's own imports (llama.cpp,
numpy) are the longest part of a cold start, and it begins them a few tens of
milliseconds sooner (quant/worker_fork.py forks it on Linux, quant/worker_start.py
starts one elsewhere; chatapp.cli then tells it what to load)."""

from __future__ import annotations

import os
import sys

from chatapp import EXIT_INTERRUPTED, interrupts

MODEL_COMMANDS = ("run", "chat", "serve", "bench")  # the commands that open a model
NOT_IN_A_WORKER = ("--in-process", "--endpoint", "--help", "-h")  # options under which no worker runs the file

interrupts.install_until_main()


def names_a_gguf_file(argv: list[str]) -> bool:
    """A first look at the command line, before argparse: a command that opens a model, and an argument
    that is an existing .gguf file (a wrong guess costs an idle worker, which ends with the app)."""
    if not argv or argv[0] not in MODEL_COMMANDS:
        return False
    if any(arg in NOT_IN_A_WORKER or arg.startswith("--endpoint=") for arg in argv):
        return False
    if any(a == "--backend" and b == "torch" for a, b in zip(argv, argv[1:])) or "--backend=torch" in argv:
        return False
    if argv[0] == "serve" and not serves_one_at_a_time(argv):  # parallel slots run in the server's process
        return False
    if argv[0] == "bench" and any(arg == "--parallel" or arg.startswith("--parallel=") for arg in argv):
        return False  # ... and in the bench's
    candidates = (arg.split("=", 1)[1] if arg.startswith("--model=") else arg for arg in argv[1:])
    return any(arg.lower().endswith(".gguf") and os.path.isfile(os.path.expanduser(arg)) for arg in candidates)


def serves_one_at_a_time(argv: list[str]) -> bool:
    """`serve --parallel 1`: the one way serve runs a GGUF file in a worker process."""
    return any(a == "--parallel" and b == "1" for a, b in zip(argv, argv[1:])) or "--parallel=1" in argv


def start_worker_now(argv: list[str]) -> None:
    if not names_a_gguf_file(argv):
        return
    try:
        from quant.worker_fork import can_fork_now, fork_spare

        if can_fork_now():
            fork_spare()
            return
        from quant.llama_log import default_log_dir
        from quant.worker_start import start_spare

        start_spare(str(default_log_dir()))
    except Exception:  # noqa: BLE001 - only a head start: the backend starts a worker itself and says what failed
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        interrupts.install()
        start_worker_now(sys.argv[1:] if argv is None else argv)
        from chatapp.cli import main as run_cli

        return run_cli(argv)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
