"""Commands and model files that can never hurt the user (issue 17): no data lost to an export or a
training run, nothing big allocated for a config.json that does not fit its weights, no value accepted
that breaks later, a clean stop on Ctrl+C and SIGTERM."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from chatapp.cli import main
from tests.helpers.paths import ROOT


@pytest.fixture
def folder(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns("checkpoint"))
    return copy


def set_architecture(folder, **values):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["architecture"].update(values)
    path.write_text(json.dumps(config))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- config.json and the weights: checked before anything is built ---


@pytest.fixture
def no_gpt_built(monkeypatch):
    """Fails the test if a GPT is built: a bad config must be refused from the file's header alone."""
    import model.network.gpt as gpt

    def refuse(self, config):
        raise AssertionError(f"a GPT was built for {config} before the config was checked")

    monkeypatch.setattr(gpt.GPT, "__init__", refuse)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(n_layer=1_000_000), "n_layer 1000000 implies 12000004"),
        (dict(n_embd=2**20, n_head=4), "token_embedding.weight has shape"),
        (dict(context_length=10**6), "position_embedding.weight has shape"),
    ],
)
def test_a_config_that_does_not_fit_its_weights_is_refused_before_building(folder, values, message, no_gpt_built):
    from model.network.model_folder import ModelFolderError, load_model

    set_architecture(folder, **values)
    started = time.monotonic()
    with pytest.raises(ModelFolderError, match=message):
        load_model(folder)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "key, value, rule",
    [
        ("n_head", [], "n_head must be a positive integer, got []"),
        ("n_head", "6", "n_head must be a positive integer, got '6'"),
        ("n_layer", 6.0, "n_layer must be a positive integer, got 6.0"),
        ("n_head", 0, "n_head must be a positive integer, got 0"),
        ("vocab_size", True, "vocab_size must be a positive integer, got True"),
        ("layer_norm_epsilon", "x", "layer_norm_epsilon must be a number"),
    ],
)
def test_wrong_types_in_config_are_one_line_errors_naming_file_and_key(folder, key, value, rule, capsys):
    set_architecture(folder, **{key: value})
    assert main(["run", "--model", str(folder), "--backend", "torch", "--max-tokens", "2", "hi"]) == 1
    assert one_line_error(capsys).startswith(f"chatapp: error: {folder / 'config.json'}: {rule}")


def test_weights_that_are_not_floats_are_refused(folder):
    from safetensors.torch import load_file, save_file

    from model.network.model_folder import ModelFolderError, load_model

    state = load_file(str(folder / "model.safetensors"))
    state["ln_f.bias"] = state["ln_f.bias"].to(dtype=__import__("torch").int32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="ln_f.bias is I32; weights must be a float type"):
        load_model(folder)


def test_a_header_pointing_past_the_end_is_refused(folder):
    from model.network.model_folder import ModelFolderError, load_model

    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        ModelFolderError,
        match="model.safetensors: unreadable or truncated \\(the header's entry for .* points past the end",
    ):
        load_model(folder)


def test_a_good_folder_loads_built_off_the_meta_device(folder):
    from model.network.model_folder import load_model

    model, _, _ = load_model(folder)
    assert all(not p.is_meta for p in model.parameters())
    assert model.lm_head.weight is model.token_embedding.weight


# --- exports never destroy what they read, nor what they did not write ---


@pytest.mark.parametrize(
    "format, inside",
    [
        ("gguf", "model.safetensors"),
        ("gguf", "config.json"),
        ("gguf", "tokenizer.tiktoken"),
        ("gguf", "m.gguf"),
        ("hf", "."),
        ("hf", "hf"),
        ("ollama", "."),
        ("ollama", "ollama"),
    ],
)
def test_an_export_never_writes_into_the_folder_it_reads(folder, format, inside, capsys):
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code = main(["export", str(folder), "--format", format, "--type", "f16", "-o", str(folder / inside), "--force"])
    assert code == 1
    assert "is inside the model folder it is made from" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_an_export_replaces_only_an_earlier_export_unless_forced(folder, tmp_path, capsys):
    notes = tmp_path / "notes.gguf"
    notes.write_text("keep me")
    assert main(["export", str(folder), "--type", "f16", "-o", str(notes)]) == 1
    assert "not an earlier chatapp export; --force replaces it" in one_line_error(capsys)
    assert notes.read_text() == "keep me"
    earlier = tmp_path / "m.gguf"
    assert main(["export", str(folder), "--type", "f16", "-o", str(earlier)]) == 0
    assert main(["export", str(folder), "--type", "f32", "-o", str(earlier)]) == 0  # ours: replaced
    assert main(["export", str(folder), "--type", "f16", "-o", str(notes), "--force"]) == 0
    capsys.readouterr()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["export", str(folder), "--format", "ollama", "--type", "f16", "-o", str(precious)]) == 1
    assert "a folder that is not an earlier chatapp export" in one_line_error(capsys)
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("special", ["fifo", "socket", "link to a fifo"])
def test_an_export_never_replaces_a_special_file_even_forced(folder, tmp_path, special, capsys):
    """A device (`-o /dev/full --force` replaced it with a regular file), a pipe or a socket stays itself."""
    import os
    import socket
    import stat

    target = tmp_path / "target.gguf"
    if special == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    else:
        os.mkfifo(tmp_path / "pipe")
        if special == "fifo":
            os.rename(tmp_path / "pipe", target)
        else:
            target.symlink_to(tmp_path / "pipe")
    before = os.stat(target).st_mode
    assert main(["export", str(folder), "--type", "f16", "-o", str(target), "--force"]) == 1
    assert "is a device or other special file" in one_line_error(capsys)
    assert os.stat(target).st_mode == before and not stat.S_ISREG(before)


def test_a_new_export_sweeps_the_temporaries_of_dead_or_stale_runs(folder, tmp_path):
    import os
    import subprocess
    import sys

    from quant.gguf_export import export_model

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    out = tmp_path / "m.gguf"
    of_dead = tmp_path / f".m.gguf.{dead_pid}.abc123.tmp"
    stale = tmp_path / f".m.gguf.{os.getppid()}.def456.f32.tmp"
    running = tmp_path / f".m.gguf.{os.getppid()}.ghi789.tmp"
    other = tmp_path / f".other.gguf.{dead_pid}.abc123.tmp"
    for path in (of_dead, stale, running, other):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    export_model(folder, out, "f16")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([running.name, other.name])


def test_an_hf_export_sweeps_the_staging_folders_of_dead_runs(folder, tmp_path):
    import os
    import subprocess
    import sys

    from quant.hf_export import export_hf

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "hf"
    of_dead = tmp_path / f".hf.{int(dead.stdout)}.abc123.tmp"
    running = tmp_path / f".hf.{os.getppid()}.def456.tmp"
    for staging in (of_dead, running):
        staging.mkdir()
        (staging / "model.safetensors").write_bytes(b"partial")
    export_hf(folder, out)
    assert (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [running.name]


@pytest.mark.parametrize("fmt", ["gguf", "hf"])
def test_an_adapters_folder_is_never_exported_into_its_base_model(folder, tmp_path, fmt):
    from tests.helpers.model_folders import make_adapters_folder

    base = tmp_path / "base"
    shutil.copytree(folder, base)
    make_adapters_folder(base, tmp_path / "chat")
    before = sorted(p.name for p in base.iterdir())
    out = base / ("m.gguf" if fmt == "gguf" else "hf")
    assert main(["export", str(tmp_path / "chat"), "--format", fmt, "-o", str(out)]) == 1
    assert sorted(p.name for p in base.iterdir()) == before


def slow_c_quantize(source, target, params):
    """Stands in for llama_model_quantize: C code (libc's qsort) that calls back into Python, as llama.cpp
    calls its log callback; a KeyboardInterrupt raised in a callback is printed and dropped by ctypes."""
    import ctypes
    import ctypes.util
    import sys
    from pathlib import Path

    Path(target.decode()).write_bytes(b"partial")
    print("quantizing", flush=True)
    sys.stdout.flush()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(lambda a, b: (time.sleep(0.01), 0)[1])
    items = (ctypes.c_int * 64)()
    libc.qsort(items, 64, ctypes.sizeof(ctypes.c_int), compare)
    return 0


@pytest.fixture
def ctrl_c_raises():
    """SIGINT as a terminal's Ctrl+C delivers it to Python: a test run started in the background
    (`cmd &` in a script) inherits SIGINT ignored, and Python then leaves it ignored."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_quantizing_stops_the_export_and_removes_its_temporaries(
    folder, tmp_path, monkeypatch, capsys, ctrl_c_raises
):
    import os
    import signal
    import threading

    import llama_cpp

    quantizing_since = []

    def quantize_then_ctrl_c(source, target, params):
        """Ctrl+C half a second into quantizing, however long the export took to get there."""
        quantizing_since.append(time.monotonic())
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        return slow_c_quantize(source, target, params)

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", quantize_then_ctrl_c)
    out = tmp_path / "out" / "m.gguf"
    assert main(["export", str(folder), "--type", "q8_0", "-o", str(out)]) == 130
    assert time.monotonic() - quantizing_since[0] < 2.5  # the fake quantizer alone runs about 4 s
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err and "Exception ignored" not in err
    assert list(out.parent.iterdir()) == []


SIGTERM_SCRIPT = """
import sys
import llama_cpp
sys.path.insert(0, {root!r})
from tests.chatapp.test_commands_never_hurt import slow_c_quantize
from chatapp.cli import main
llama_cpp.llama_model_quantize = slow_c_quantize
sys.exit(main(["export", {folder!r}, "--type", "q8_0", "-o", {out!r}]))
"""


@pytest.mark.slow
def test_sigterm_while_exporting_removes_the_temporaries(folder, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "out" / "m.gguf"
    script = SIGTERM_SCRIPT.format(root=str(ROOT), folder=str(folder), out=str(out))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "quantizing"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


# --- training never overwrites a model folder by surprise; numbers that mean nothing are refused ---


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_training_refuses_a_folder_that_is_not_empty_unless_resume_or_force(folder, tmp_path, command, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    base = [str(folder)] if command == "finetune" else ["--preset", "tiny"]
    assert main([command, *base, "--out", str(out), "--steps", "1"]) == 1
    assert one_line_error(capsys) == (
        f"chatapp: error: {out}: is not empty (a model folder?); --resume continues its run, --force overwrites it"
    )
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert main([command, *base, "--out", str(folder), "--steps", "1"]) == 1  # the base itself
    assert "is not empty" in one_line_error(capsys)


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize(
    "option, value", [("--steps", "0"), ("--steps", "-1"), ("--batch-size", "0"), ("--steps", "x")]
)
def test_steps_and_batch_size_must_be_at_least_one(tmp_path, command, option, value, capsys):
    base = ["base"] if command == "finetune" else []
    with pytest.raises(SystemExit) as exited:
        main([command, *base, "--out", str(tmp_path / "out"), option, value])
    assert exited.value.code == 2
    assert f"argument {option}: must be an integer >= 1, got " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("top_k", 10**21, "top_k must be an integer >= 0 and at most 1,000,000,000"),
        ("max_tokens", 10**12, "max_tokens must be an integer >= 1 and at most 1,000,000,000"),
        ("repetition_penalty", 1e-320, "repetition_penalty must be a number in [0.001, 1000]"),
        ("repetition_penalty", 1e300, "repetition_penalty must be a number in [0.001, 1000]"),
    ],
)
def test_numbers_that_pass_a_sign_check_but_break_later_are_refused(field, value, rule):
    from model.inference.sampling import SamplingError, SamplingParams

    with pytest.raises(SamplingError) as error:
        SamplingParams(**{field: value}).validate()
    assert str(error.value).startswith(rule)


@pytest.mark.parametrize("backend", ["torch", "llama.cpp"])
def test_a_subnormal_repeat_penalty_is_the_same_one_line_error_on_both_backends(backend, capsys):
    assert main(["run", "--backend", backend, "--repeat-penalty", "1e-320", "hi"]) == 1
    assert one_line_error(capsys) == (
        "chatapp: error: repetition_penalty must be a number in [0.001, 1000] (1 is off), got 1e-320"
    )


def test_max_tokens_beyond_the_context_is_capped_with_a_notice(tiny_model_dir):
    from chatapp.models.opening import open_backend
    from chatapp.models.resolve import resolve_model
    from model.inference.backend import Finished
    from model.inference.sampling import SamplingParams

    backend = open_backend(resolve_model(str(tiny_model_dir)), "torch", "cpu")
    events = list(backend.complete("To be", SamplingParams(max_tokens=10**9, seed=1, temperature=0)))
    finished = [e for e in events if isinstance(e, Finished)][0]
    assert f"max_tokens 1,000,000,000 is more than the context of {backend.context_length:,} tokens" in " ".join(
        finished.notices
    )
    assert finished.completion_tokens <= backend.context_length
