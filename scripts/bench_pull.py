"""`chatapp pull` against huggingface_hub's own `hf download`, side by side in one run, on the same file
from the same local stand-in for the hub (tests/helpers/fake_hub.py, in a process of its own).

    python scripts/bench_pull.py [--repeats 5] [--keep DIR] [FILE.gguf]

Each run is a fresh process with a fresh, empty Hugging Face cache: `chatapp pull REPO:Q8_0` (list the
repo, choose, check the disk, download, SHA-256 as the bytes arrive, link into the cache, check the GGUF,
record the pull) and `hf download REPO FILE` (download into the cache; no checksum). Wall clock from
start to exit, Python's start and imports included, as a user waits for it. The two alternate, so the
machine's load hits both alike; the median of the repeats is shown, with `uptime` before and after, and
the ratio of chatapp's throughput to hf's (goal: >= 0.95), and each one's CPU time (user + system).

Without a file: a Qwen2-layout GGUF with Qwen2's 151,936-token vocabulary, Q8_0, ~129 MB, written by
tests/helpers/foreign_gguf.py to a temporary folder (or --keep DIR, reused when there).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

REPO = "bench/Qwen2-Layout-GGUF"
FILE_NAME = "Qwen2-Layout-Q8_0.gguf"
BIN = Path(sys.executable).parent


def bench_file(folder: Path) -> Path:
    path = folder / FILE_NAME
    if not path.is_file():
        from tests.helpers.foreign_gguf import write_foreign_gguf

        write_foreign_gguf(path, "qwen2", vocab_size=151936, embedding_length=384, weight_type="Q8_0")
    return path


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "load: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_hub(path: Path) -> tuple[subprocess.Popen, str]:
    hub = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.fake_hub", REPO, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert hub.stdout is not None
    return hub, hub.stdout.readline().strip()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(tool: str, endpoint: str, work: Path) -> tuple[float, float, Path]:
    """One fresh download by `tool` into an empty cache under `work`: wall seconds, CPU seconds, the file it made."""
    cache = work / f"{tool}-cache"
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_CACHE": str(cache),
        "HF_HOME": str(work / "hf-home"),
        "CHATAPP_HOME": str(work / "chatapp-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for variable in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        env.pop(variable, None)
    if tool == "chatapp":
        command = [sys.executable, "-m", "chatapp", "pull", f"{REPO}:Q8_0"]
    else:
        command = [str(BIN / "hf"), "download", REPO, FILE_NAME]
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    [made] = list((cache / f"models--{REPO.replace('/', '--')}" / "snapshots").rglob(FILE_NAME))
    return seconds, cpu, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="a .gguf to serve (default: a ~129 MB Qwen2-layout file)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", default=None, help="a folder for the default file, reused when there")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pull-") as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(args.file) if args.file else bench_file(folder)
        if args.file:
            link = Path(scratch) / FILE_NAME
            os.symlink(source.resolve(), link)
            source = link
        size = source.stat().st_size
        expected = sha256(source)
        hub, endpoint = start_hub(source)
        times: dict[str, list[float]] = {"chatapp": [], "hf": []}
        cpus: dict[str, list[float]] = {"chatapp": [], "hf": []}
        try:
            print(f"file: {size / 1e6:.1f} MB ({source.name}), served from {endpoint} by tests/helpers/fake_hub.py")
            print(f"cpus: {os.cpu_count()}; before: {uptime()}")
            for repeat in range(args.repeats):
                order = ("chatapp", "hf") if repeat % 2 == 0 else ("hf", "chatapp")
                for tool in order:
                    with tempfile.TemporaryDirectory(prefix=f"bench-pull-{tool}-", dir=scratch) as work:
                        seconds, cpu, made = timed_run(tool, endpoint, Path(work))
                        if sha256(made) != expected:
                            raise SystemExit(f"{tool}: the file it made differs from the one served")
                    times[tool].append(seconds)
                    cpus[tool].append(cpu)
                    print(
                        f"  run {repeat + 1} {tool:8s} {seconds:6.2f} s  {size / seconds / 1e6:7.1f} MB/s  "
                        f"CPU {cpu:5.2f} s"
                    )
            print(f"after: {uptime()}")
        finally:
            hub.terminate()
            hub.wait(timeout=10)

    print()
    print("| tool | median wall time | throughput | median CPU time |")
    print("|---|---:|---:|---:|")
    medians = {tool: statistics.median(values) for tool, values in times.items()}
    labels = {"chatapp": "`chatapp pull` (SHA-256 checked, GGUF checked)", "hf": "`hf download` (huggingface_hub)"}
    for tool, seconds in medians.items():
        cpu = statistics.median(cpus[tool])
        print(f"| {labels[tool]} | {seconds:.2f} s | {size / seconds / 1e6:.0f} MB/s | {cpu:.2f} s |")
    ratio = medians["hf"] / medians["chatapp"]
    print(f"\nchatapp / hf throughput: {ratio:.2f}x (goal >= 0.95x)")


if __name__ == "__main__":
    main()
