"""`chatapp pull` and `chatapp rm`, against a stand-in for the hub on 127.0.0.1 (tests/helpers/fake_hub.py):
no network. The hub's files are GGUFs these tests write (tests/helpers/foreign_gguf.py) or the shipped one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path

import pytest

from chatapp.cli import main
from chatapp.models import hub_plan
from chatapp.models import pull as pull_module
from chatapp.models.discovery import hf_cache_models
from chatapp.models.hub_cache import find_removal, remove_model
from chatapp.models.hub_plan import (
    Candidate,
    HubFile,
    PullError,
    PullSpec,
    choose,
    gguf_candidates,
    parse_spec,
    quant_bits,
    quant_of,
)
from chatapp.models.pull import PullCancelled, pull
from chatapp.models.pull_printer import PullPrinter
from chatapp.models.pulled import pulled_models, read_record
from chatapp.models.resolve import resolve_model
from tests.helpers.fake_hub import FakeHub
from tests.helpers.foreign_gguf import write_foreign_gguf
from tests.helpers.paths import ROOT

SHIPPED = ROOT / "chatapp" / "builtin" / "shakespeare-chat-q8_0.gguf"  # 6.6 MB: big enough to cut in the middle
REPO = "someone/Tiny-Chat-GGUF"


@pytest.fixture
def hub(hub_cache, monkeypatch):
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    """Small real GGUFs, each with bytes of its own (a blob is named by its SHA-256)."""
    folder = tmp_path_factory.mktemp("hub-files")
    files = {f"seed{seed}": write_foreign_gguf(folder / f"seed{seed}.gguf", "qwen2", seed=seed) for seed in range(6)}
    files["shipped"] = SHIPPED
    not_a_model = folder / "noise.gguf"
    not_a_model.write_bytes(os.urandom(300_000))
    files["noise"] = not_a_model
    return files


def snapshot_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() or p.is_symlink())


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# What a user types


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bartowski/Llama-3.2-1B-Instruct-GGUF", PullSpec("bartowski/Llama-3.2-1B-Instruct-GGUF")),
        ("unsloth/gemma-3-270m-it-GGUF:Q8_0", PullSpec("unsloth/gemma-3-270m-it-GGUF", quant="Q8_0")),
        ("hf.co/Qwen/Qwen3-0.6B-GGUF:q8_0", PullSpec("Qwen/Qwen3-0.6B-GGUF", quant="q8_0")),
        ("Qwen/Qwen3-0.6B-GGUF:Qwen3-0.6B-Q8_0.gguf", PullSpec("Qwen/Qwen3-0.6B-GGUF", file="Qwen3-0.6B-Q8_0.gguf")),
        (
            "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf?download=true",
            PullSpec("Qwen/Qwen3-0.6B-GGUF", "main", file="Qwen3-0.6B-Q8_0.gguf"),
        ),
        (
            "https://huggingface.co/o/r/blob/refs%2Fpr%2F2/Q4_K_M/r-Q4_K_M-00001-of-00002.gguf",
            PullSpec("o/r", "refs/pr/2", file="Q4_K_M/r-Q4_K_M-00001-of-00002.gguf"),
        ),
        ("https://huggingface.co/Qwen/Qwen3-0.6B-GGUF", PullSpec("Qwen/Qwen3-0.6B-GGUF")),
    ],
)
def test_a_spec_is_a_repo_a_quantization_a_file_or_the_url_of_one(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("llama3", "not a model on the hub"),
        ("a/b/c", "not a model on the hub"),
        ("../etc:Q4_K_M", "not a model on the hub"),
        ("https://example.com/o/r/resolve/main/x.gguf", "not a Hugging Face hub address"),
        ("https://huggingface.co/o/r/resolve/main/model.safetensors", "not a .gguf file"),
        ("https://huggingface.co/o/r/tree/main", "not the address of a file"),
    ],
)
def test_what_is_not_a_spec_is_refused_with_the_form_expected(text, message):
    with pytest.raises(PullError, match=message):
        parse_spec(text)


# The choice


def candidates(*names_and_sizes) -> list[Candidate]:
    files = [HubFile(name, size, f"{i:064x}", None) for i, (name, size) in enumerate(names_and_sizes)]
    return gguf_candidates(files)[0]


def test_quantizations_are_read_from_names_and_counted_in_bits():
    assert quant_of("Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("qwen2.5-0.5b-instruct-q8_0.gguf") == "Q8_0"
    assert quant_of("gemma-3-27b-it-UD-Q4_K_XL-00001-of-00002.gguf") == "UD-Q4_K_XL"
    assert quant_of("Q5_K_M/model-00001-of-00003.gguf") == "Q5_K_M"
    assert quant_of("Qwen3-4B-BF16.gguf") == "BF16"
    assert quant_of("Qwen3-4B.gguf") is None
    assert [quant_bits(q) for q in ("Q4_K_M", "IQ4_XS", "Q3_K_L", "UD-Q2_K_XL", "Q8_0", "BF16", "F32", "MXFP4")] == [
        4,
        4,
        3,
        2,
        8,
        16,
        32,
        4,
    ]


def test_q4_k_m_is_the_default():
    found = candidates(("m-Q8_0.gguf", 800), ("m-Q4_K_M.gguf", 500), ("m-Q3_K_S.gguf", 300), ("m-IQ4_XS.gguf", 450))
    chosen, reason = choose(PullSpec("o/m"), found)
    assert (chosen.path, "default" in reason) == ("m-Q4_K_M.gguf", True)


def test_without_q4_k_m_the_smallest_of_at_least_four_bits_and_the_reason():
    found = candidates(
        ("m-Q8_0.gguf", 800),
        ("m-Q5_K_M.gguf", 560),
        ("m-IQ4_XS.gguf", 450),
        ("m-Q3_K_L.gguf", 400),
        ("m-Q2_K.gguf", 300),
    )
    chosen, reason = choose(PullSpec("o/m"), found)
    assert chosen.path == "m-IQ4_XS.gguf"
    assert "no Q4_K_M" in reason and "smallest" in reason and "4 bits" in reason


def test_with_nothing_of_four_bits_the_largest_and_a_single_model_whatever_it_is():
    chosen, reason = choose(PullSpec("o/m"), candidates(("m-Q2_K.gguf", 300), ("m-Q3_K_M.gguf", 390)))
    assert chosen.path == "m-Q3_K_M.gguf" and "largest" in reason
    chosen, reason = choose(PullSpec("o/m"), candidates(("m-F16.gguf", 3000)))
    assert chosen.path == "m-F16.gguf" and "only" in reason


def test_the_quantization_asked_for_whatever_its_case_and_the_list_when_it_is_not_there():
    found = candidates(("m-Q8_0.gguf", 800), ("m-Q4_K_M.gguf", 500))
    assert choose(PullSpec("o/m", quant="q8_0"), found)[0].path == "m-Q8_0.gguf"
    with pytest.raises(PullError, match=r"o/m has no Q6_K file; it has: Q4_K_M \(.*\), Q8_0"):
        choose(PullSpec("o/m", quant="Q6_K"), found)


def test_split_parts_are_one_model_a_split_with_parts_missing_is_none_and_projectors_are_apart():
    found, projectors, incomplete = gguf_candidates(
        [
            HubFile("Q8_0/m-Q8_0-00001-of-00002.gguf", 600, "a" * 64, None),
            HubFile("Q8_0/m-Q8_0-00002-of-00002.gguf", 500, "b" * 64, None),
            HubFile("m-Q4_K_M-00001-of-00003.gguf", 300, "c" * 64, None),
            HubFile("m-Q4_K_M-00003-of-00003.gguf", 300, "d" * 64, None),
            HubFile("mmproj-m-F16.gguf", 800, "e" * 64, None),
            HubFile("README.md", 5, None, "f" * 40),
        ]
    )
    assert [(c.quant, c.size, len(c.files)) for c in found] == [("Q8_0", 1100, 2)]
    assert [p.path for p in projectors] == ["mmproj-m-F16.gguf"]
    assert incomplete == ["m-Q4_K_M-00001-of-00003.gguf"]


# A pull


def test_a_pull_lands_in_the_hugging_face_cache_verified_checked_listed_and_runnable_by_its_spec(
    hub, hub_cache, ggufs, capsys
):
    from huggingface_hub import try_to_load_from_cache

    repo = hub.add_repo(
        REPO,
        {
            "Tiny-Chat-Q8_0.gguf": ggufs["seed0"],
            "Tiny-Chat-Q4_K_M.gguf": ggufs["shipped"],
            "mmproj-Tiny-Chat-F16.gguf": ggufs["seed1"],
            "README.md": ggufs["seed2"],
        },
    )
    code, out, err = cli(capsys, "pull", REPO)
    assert (code, err) == (0, "")
    assert "Q4_K_M (6.6 MB), the default" in out
    assert "also here: Q8_0" in out and "mmproj-Tiny-Chat-F16.gguf" in out and "vision projector" in out
    assert "matches the hub's checksum" in out and f"chatapp run -m {REPO}:Q4_K_M" in out
    # the cache's own layout: other tools see it
    pointer = hub_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / repo.commit / "Tiny-Chat-Q4_K_M.gguf"
    assert pointer.is_symlink() and pointer.resolve().name == repo.files["Tiny-Chat-Q4_K_M.gguf"].sha256
    assert pointer.read_bytes() == SHIPPED.read_bytes()
    assert (pointer.parents[2] / "refs" / "main").read_text() == repo.commit
    assert try_to_load_from_cache(REPO, "Tiny-Chat-Q4_K_M.gguf", cache_dir=hub_cache) == str(pointer)
    assert [ref.name for ref in hf_cache_models()] == [f"{REPO}/Tiny-Chat-Q4_K_M.gguf"]  # not the projector
    assert hub.bytes_sent() == SHIPPED.stat().st_size  # one file, once
    # chatapp models marks it; chatapp run finds it by what it was pulled as
    code, out, err = cli(capsys, "models")
    [line] = [line for line in out.splitlines() if "Tiny-Chat-Q4_K_M.gguf" in line]
    assert line.startswith("+ ") and "pulled with `chatapp pull`" in out
    assert resolve_model(f"{REPO}:q4_k_m").path == pointer
    code, out, err = cli(capsys, "models", "--json")
    assert [m["name"] for m in json.loads(out) if m["pulled"]] == [f"{REPO}/Tiny-Chat-Q4_K_M.gguf"]


def test_pulling_again_fetches_nothing(hub, ggufs, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"]})
    first = pull(REPO)
    hub.reset_counts()
    events = []
    second = pull(f"{REPO}:Q8_0", on_event=events.append)
    assert second.path == first.path and second.downloaded_bytes == 0
    assert hub.bytes_sent() == 0 and hub.downloads("Tiny-Q8_0.gguf") == []
    assert any(e.kind == "note" and "already here" in e.message for e in events)


def test_a_url_of_one_file_pulls_that_file(hub, ggufs):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"], "Tiny-Q4_K_M.gguf": ggufs["seed1"]})
    result = pull(f"{hub.url}/{REPO}/resolve/main/Tiny-Q8_0.gguf")
    assert result.path.name == "Tiny-Q8_0.gguf" and result.spec == f"{REPO}:Q8_0"
    assert hub.bytes_sent("Tiny-Q4_K_M.gguf") == 0


def test_a_split_model_is_fetched_whole_listed_once_and_removed_whole(hub, hub_cache, ggufs, capsys):
    parts = {f"Q8_0/Big-Q8_0-0000{i}-of-00003.gguf": ggufs[f"seed{i}"] for i in (1, 2, 3)}
    hub.add_repo(REPO, {**parts, "Big-Q4_0.gguf": ggufs["seed4"]})
    result = pull(f"{REPO}:Q8_0")
    assert [p.name for p in result.files] == [Path(name).name for name in parts]
    assert all(p.read_bytes() == source.read_bytes() for p, source in zip(result.files, parts.values()))
    assert result.size_bytes == sum(p.stat().st_size for p in parts.values()) == hub.bytes_sent()
    [listed] = hf_cache_models()
    assert listed.path == result.path and listed.size_bytes == result.size_bytes
    code, out, err = cli(capsys, "rm", "--yes", f"{REPO}:Q8_0")
    assert code == 0 and "removed" in out
    assert snapshot_files(hub_cache / f"models--{REPO.replace('/', '--')}") == [] and hf_cache_models() == []


# Interrupted


def test_a_dropped_connection_is_resumed_asking_only_for_the_missing_bytes(hub):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    size = SHIPPED.stat().st_size
    hub.drop_after["Tiny-Q8_0.gguf"] = 2_500_000
    events = []
    result = pull(REPO, on_event=events.append)
    assert result.path.read_bytes() == SHIPPED.read_bytes()
    assert [r.headers.get("range") for r in hub.downloads("Tiny-Q8_0.gguf")] == [None, "bytes=2500000-"]
    assert hub.bytes_sent("Tiny-Q8_0.gguf") == size  # nothing sent twice
    assert any(e.kind == "note" and "connection dropped" in e.message for e in events)


@pytest.mark.parametrize("how", ["ctrl-c", "cancel"])
def test_after_a_ctrl_c_or_a_cancel_the_next_pull_fetches_only_the_rest(hub, hub_cache, how):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    size = SHIPPED.stat().st_size
    cancel = threading.Event()

    def stop_a_third_of_the_way(event):
        if event.kind == "progress" and event.data["done_bytes"] >= size // 3:
            if how == "cancel":
                cancel.set()
            else:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt if how == "ctrl-c" else PullCancelled):
        pull(REPO, on_event=stop_a_third_of_the_way, cancel=cancel)
    [kept] = list(hub_cache.rglob("*.incomplete"))
    have = kept.stat().st_size
    assert size // 3 - 256 * 1024 <= have < size and hf_cache_models() == [] and read_record() == []
    hub.reset_counts()
    result = pull(REPO)
    assert result.path.read_bytes() == SHIPPED.read_bytes() and result.downloaded_bytes == size - have
    assert hub.bytes_sent() == size - have
    assert [r.headers.get("range") for r in hub.downloads("Tiny-Q8_0.gguf")] == [f"bytes={have}-"]
    assert list(hub_cache.rglob("*.incomplete")) == []


def test_an_interrupted_cli_pull_says_what_it_kept_and_how_to_go_on(hub, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})

    def interrupt(self, n):
        raise KeyboardInterrupt

    monkeypatch.setattr(pull_module.Transfer, "advance", interrupt)
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 130
    assert f"kept; `chatapp pull {REPO}` goes on from there" in err and "Traceback" not in err


# Refused


def test_a_checksum_mismatch_is_refused_and_nothing_is_left_in_the_cache(hub, hub_cache, ggufs, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"]})
    hub.wrong_sha256(REPO, "Tiny-Q8_0.gguf")
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 1 and "does not match the hub's SHA-256" in err and "nothing kept" in err
    assert len(err.splitlines()) == 1
    assert not (hub_cache / f"models--{REPO.replace('/', '--')}").exists()
    assert snapshot_files(hub_cache) == [] and hf_cache_models() == [] and read_record() == []


def test_a_checksum_mismatch_leaves_what_was_in_the_repos_cache_before(hub, hub_cache, ggufs):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"], "Tiny-Q4_0.gguf": ggufs["seed1"]})
    good = pull(f"{REPO}:Q8_0")
    before = snapshot_files(hub_cache)
    hub.wrong_sha256(REPO, "Tiny-Q4_0.gguf")
    with pytest.raises(PullError, match="does not match"):
        pull(f"{REPO}:Q4_0")
    assert snapshot_files(hub_cache) == before and [r.path for r in hf_cache_models()] == [good.path]


def test_a_full_disk_is_refused_before_a_byte_naming_the_size_needed(hub, hub_cache, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1_000_000, 1_000_000))
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 1
    assert (
        err == f"chatapp: error: not enough disk space: {REPO}:Q8_0 needs 6.6 MB in {hub_cache}, and 1.0 MB is free\n"
    )
    assert hub.downloads("Tiny-Q8_0.gguf") == [] and hub.bytes_sent() == 0


def test_the_disk_check_counts_only_what_is_still_missing(hub, hub_cache, monkeypatch):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    size = SHIPPED.stat().st_size
    with pytest.raises(KeyboardInterrupt):
        pull(
            REPO,
            on_event=lambda e: (
                (_ for _ in ()).throw(KeyboardInterrupt)
                if e.kind == "progress" and e.data["done_bytes"] >= size // 2
                else None
            ),
        )
    have = next(hub_cache.rglob("*.incomplete")).stat().st_size
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, size - have))  # just enough
    assert pull(REPO).downloaded_bytes == size - have


@pytest.mark.parametrize(
    "flags, spec, message",
    [
        ({}, "nobody/Nothing-GGUF", "nobody/Nothing-GGUF: no such model on the hub (404"),
        ({}, f"{REPO}:Q2_K", f"{REPO} has no Q2_K file; it has: Q8_0 (6.6 MB)"),
        (
            {"private": True, "token": "secret"},
            REPO,
            "private or gated (401): check the name, or log in with `hf auth login` or set HF_TOKEN",
        ),
        ({"gated": True, "token": "secret"}, REPO, f"{REPO} is gated (401): log in"),
    ],
)
def test_hub_refusals_are_one_line_and_exit_1(hub, flags, spec, message, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED}, **flags)
    code, out, err = cli(capsys, "pull", spec)
    assert code == 1 and err.startswith("chatapp: error: ") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_private_and_gated_repos_are_read_with_the_token_huggingface_hub_knows(hub, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED}, private=True, token="secret")
    hub.add_repo("corp/Gated-GGUF", {"Gated-Q8_0.gguf": SHIPPED}, gated=True, token="secret", accepted=False)
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert pull(REPO).path.read_bytes() == SHIPPED.read_bytes()
    assert all(r.headers.get("authorization") == "Bearer secret" for r in hub.requests if REPO in r.path)
    code, out, err = cli(capsys, "pull", "corp/Gated-GGUF")
    assert code == 1 and "is gated (403): accept its terms on" in err and f"{hub.url}/corp/Gated-GGUF" in err
    monkeypatch.setenv("HF_TOKEN", "wrong")
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 1 and "your token may not read it (401)" in err


def test_offline_mode_is_one_line_and_asks_nothing_of_the_hub(hub, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 1 and "offline mode is on (HF_HUB_OFFLINE)" in err and len(err.splitlines()) == 1
    assert hub.requests == []


def test_no_network_is_one_line(hub_cache, monkeypatch, capsys):
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # nothing listens there
    code, out, err = cli(capsys, "pull", REPO)
    assert code == 1 and f"cannot reach the Hugging Face hub at http://127.0.0.1:{port}" in err
    assert len(err.splitlines()) == 1


def test_a_file_that_is_not_a_model_is_not_offered(hub, ggufs):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["noise"]})
    with pytest.raises(PullError, match="downloaded and verified, but not a model chatapp can run"):
        pull(REPO)
    assert pulled_models() == []


def test_a_command_line_failure_in_a_fresh_process_is_one_line_without_a_traceback(hub):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "chatapp", "pull", f"{REPO}:Q5_K_M"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == f"chatapp: error: {REPO} has no Q5_K_M file; it has: Q8_0 (6.6 MB)\n"


def test_huggingface_hub_is_not_imported_to_start_the_command_line():
    code = "import sys, chatapp.cli, chatapp.commands; print('huggingface_hub' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# Progress


def test_progress_is_plain_lines_off_a_terminal_json_lines_for_scripts_and_a_bar_on_one(hub, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": SHIPPED})
    code, out, err = cli(capsys, "pull", "--json", REPO)
    records = [json.loads(line) for line in out.splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[0] == "plan" and kinds[-3:] == ["verified", "checked", "done"] and "progress" in kinds
    assert records[0]["quant"] == "Q8_0" and records[0]["size_bytes"] == SHIPPED.stat().st_size
    last = [r for r in records if r["event"] == "progress"][-1]
    assert last["done_bytes"] == last["total_bytes"] == SHIPPED.stat().st_size
    assert {"bytes_per_second", "eta_seconds"} <= set(last)
    assert records[-1]["spec"] == f"{REPO}:Q8_0" and Path(records[-1]["path"]).is_file()

    code, out, err = cli(capsys, "rm", "-y", f"{REPO}:Q8_0")
    code, out, err = cli(capsys, "pull", REPO)  # captured: not a terminal
    progress = [line for line in out.splitlines() if "% " in line]
    assert 2 <= len(progress) <= 11 and "\r" not in out and progress[-1].strip().startswith("100.0%")

    import io

    screen = io.StringIO()
    printer = PullPrinter(screen, "terminal")
    for done in (0, 3_300_000, 6_600_000):
        printer(
            pull_module.PullEvent(
                "progress",
                "",
                {
                    "file": "f",
                    "done_bytes": done,
                    "total_bytes": 6_600_000,
                    "bytes_per_second": 2_000_000,
                    "eta_seconds": 1.7,
                },
            )
        )
    printer.close()
    assert screen.getvalue().count("\r") == 3 and "[############............]  50.0%" in screen.getvalue()
    assert "2.0 MB/s  ETA 2s" in screen.getvalue() and screen.getvalue().endswith("\n")


# chatapp rm


def test_rm_asks_first_and_keeps_the_model_on_no(hub, ggufs, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"]})
    result = pull(REPO)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    code, out, err = cli(capsys, "rm", f"{REPO}:Q8_0")
    assert code == 1 and "not removed" in out and result.path.is_file()
    assert asked == [f"remove {REPO}:Q8_0 ({result.size_bytes / 1e6:.1f} MB, {result.path})? [y/N] "]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, err = cli(capsys, "rm", f"{REPO}/Tiny-Q8_0.gguf")  # by its name in `chatapp models`
    assert code == 0 and not result.path.exists() and pulled_models() == []


def test_rm_without_a_terminal_wants_yes(hub, ggufs, monkeypatch, capsys):
    hub.add_repo(REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"]})
    result = pull(REPO)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, out, err = cli(capsys, "rm", REPO)
    assert code == 1 and "--yes removes it without asking" in err and result.path.is_file()


def test_rm_keeps_a_blob_another_file_still_uses_and_the_rest_of_the_repo(hub, hub_cache, ggufs):
    hub.add_repo(
        REPO, {"Tiny-Q8_0.gguf": ggufs["seed0"], "Tiny-Q4_K_M.gguf": ggufs["seed0"], "Tiny-Q4_0.gguf": ggufs["seed1"]}
    )
    first, second = pull(f"{REPO}:Q8_0"), pull(f"{REPO}:Q4_K_M")  # the same bytes: one blob
    third = pull(f"{REPO}:Q4_0")
    remove_model(find_removal(f"{REPO}:Q8_0"))
    assert not first.path.exists() and second.path.read_bytes() == ggufs["seed0"].read_bytes()
    remove_model(find_removal(f"{REPO}:Q4_K_M"))
    blobs = hub_cache / f"models--{REPO.replace('/', '--')}" / "blobs"
    assert [b.name for b in blobs.iterdir()] == [third.path.resolve().name]


def test_rm_of_a_model_outside_the_hugging_face_cache_is_refused(hub_cache, capsys):
    code, out, err = cli(capsys, "rm", "--yes", "shakespeare-chat-q8_0")
    assert code == 1 and "is built-in's" in err and "not in the Hugging Face cache" in err and SHIPPED.is_file()
    code, out, err = cli(capsys, "rm", "--yes", "nobody/nothing:Q4_K_M")
    assert code == 1 and "no pulled model named 'nobody/nothing:Q4_K_M'" in err


def test_huggingface_hubs_download_chunk_is_as_they_come_during_a_pull_and_put_back_after_the_last(hub_cache):
    import huggingface_hub.constants as constants

    before = constants.DOWNLOAD_CHUNK_SIZE
    with pull_module.raw_chunks():
        with pull_module.raw_chunks():  # a second pull at once (the TUI may run two)
            assert constants.DOWNLOAD_CHUNK_SIZE is None
        assert constants.DOWNLOAD_CHUNK_SIZE is None
    assert constants.DOWNLOAD_CHUNK_SIZE == before and isinstance(before, int)


def test_a_connection_that_keeps_breaking_is_one_line_that_says_pull_again():
    import httpx2  # huggingface_hub's HTTP client; its five tries at resuming are over when this reaches chatapp

    message = hub_plan.hub_error_message(httpx2.RemoteProtocolError("peer closed connection"), PullSpec(REPO))
    assert message == "the connection to the hub broke (peer closed connection): pull again to resume"
    assert hub_plan.hub_error_message(KeyError("a bug"), PullSpec(REPO)) is None  # a bug is not the hub's
