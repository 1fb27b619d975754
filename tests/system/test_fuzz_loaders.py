"""Fuzzing the loaders: damaged files give one line of error or a working model, never a
traceback, a crash or a memory blow-up (issue 17).

Valid files (the tiny model's Q8_0 GGUF, a foreign qwen2 GGUF, the tiny model folder's
model.safetensors, config.json and tokenizer.tiktoken) are mutated by hypothesis:
truncated, bytes flipped (mostly in the header), lengths and counts forged (the GGUF
tensor / KV counts, string lengths, array counts, dims, types, offsets; the safetensors
8-byte header length, shapes, data_offsets and dtypes in its JSON), config.json values
replaced by the wrong JSON types, garbage lines put in tokenizer.tiktoken.

Each hypothesis example is a BATCH of mutations: one child process (tests/helpers/fuzz_child.py,
RLIMIT_AS 3 GB, a timeout) loads them all with the real loaders and prints one JSON line
per case. Per case: the outcome is "ok" or a one-line error; the child exits 0 (a crash,
a MemoryError or a hang is a failure naming the case); a sample also goes through the
CLI, `python -m chatapp run --model PATH --max-tokens 2 hi`, which must exit 0 or 1 with
stderr empty or one "chatapp: error:" line.

Reproducible: derandomize=True (a fixed seed). A failure prints the case's mutation;
mutate_gguf / mutate_safetensors / mutate_config / mutate_tokenizer applied to the
original file rebuild it. CHATAPP_FUZZ_CASES=N runs about N cases in all (default 300);
CHATAPP_FUZZ_LOG=FILE appends every case's outcome to FILE (JSON lines).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.helpers.gguf_exports import exported

pytestmark = pytest.mark.slow

from tests.helpers.paths import ROOT  # noqa: E402

CHILD = ROOT / "tests" / "helpers" / "fuzz_child.py"
MEMORY_LIMIT = 3 << 30
TOTAL_CASES = int(os.environ.get("CHATAPP_FUZZ_CASES", "300"))
BATCH = 40
BATCH_TIMEOUT_S = 240
CLI_TIMEOUT_S = 60


def fuzz_settings(share: float):
    """About share * TOTAL_CASES cases, in batches of BATCH; no shrinking (each step is a child
    process): the failing case's mutation is printed instead."""
    examples = max(1, math.ceil(share * TOTAL_CASES / BATCH))
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


# --- the GGUF header, as a list of the places where a length, count or type lives ---

U8, U16, U32, U64, F32, F64 = "<B", "<H", "<I", "<Q", "<f", "<d"
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_slots(data: bytes) -> tuple[dict[str, list[tuple[int, str, str]]], int]:
    """{category: [(offset, struct format, label)]} for the header's numbers, and where the header ends."""
    slots: dict[str, list] = {
        k: []
        for k in (
            "count",
            "key_len",
            "value_type",
            "value",
            "str_len",
            "array_type",
            "array_count",
            "array_item_len",
            "n_dims",
            "dim",
            "tensor_type",
            "tensor_offset",
        )
    }
    pos = 8

    def number(fmt):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string(category, label):
        nonlocal pos
        slots[category].append((pos, U64, label))
        length = number(U64)
        text = data[pos : pos + length].decode("utf-8", "replace")
        pos += length
        return text

    slots["count"].append((pos, U64, "tensor count"))
    n_tensors = number(U64)
    slots["count"].append((pos, U64, "kv count"))
    n_kv = number(U64)
    for _ in range(n_kv):
        key = string("key_len", "key length")
        slots["value_type"].append((pos, U32, f"{key} type"))
        kind = number(U32)
        if kind == 8:
            string("str_len", f"{key} length")
        elif kind == 9:
            slots["array_type"].append((pos, U32, f"{key} item type"))
            item = number(U32)
            slots["array_count"].append((pos, U64, f"{key} count"))
            count = number(U64)
            for j in range(count):
                if item == 8:
                    string("array_item_len", f"{key}[{j}] length")
                else:
                    pos += struct.calcsize(SCALARS[item])
        else:
            slots["value"].append((pos, SCALARS[kind], f"{key} value"))
            pos += struct.calcsize(SCALARS[kind])
    for _ in range(n_tensors):
        name = string("key_len", "tensor name length")
        slots["n_dims"].append((pos, U32, f"{name} n_dims"))
        n_dims = number(U32)
        for d in range(n_dims):
            slots["dim"].append((pos, U64, f"{name} dim {d}"))
            number(U64)
        slots["tensor_type"].append((pos, U32, f"{name} type"))
        number(U32)
        slots["tensor_offset"].append((pos, U64, f"{name} offset"))
        number(U64)
    return slots, pos


def forged_values(fmt: str, original, file_size: int) -> st.SearchStrategy:
    if fmt in (F32, F64, "<f", "<d"):
        return st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e38, -0.0, 1e-45])
    bits = struct.calcsize(fmt) * 8
    signed = fmt.islower() and fmt[-1] != "?"
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    specials = [
        low,
        high,
        0,
        1,
        2,
        7,
        8,
        9,
        12,
        13,
        30,
        255,
        1 << 16,
        (1 << 31) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        (1 << 63) - 1,
        file_size,
        file_size - 8,
        original + 1,
        original - 1,
        original * 2,
        original * 1000,
        original ^ (1 << 40),
    ]
    specials = sorted({v for v in specials if low <= v <= high})
    return st.one_of(st.sampled_from(specials), st.integers(low, high))


@st.composite
def gguf_mutation(draw, data: bytes, slots: dict, header_end: int):
    size = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "forge", "forge", "forge"]))
    if kind == "truncate":
        near_header = st.integers(0, header_end + 64)
        return ("truncate", draw(st.one_of(near_header, st.integers(0, size - 1))))
    if kind == "flip":
        region = st.integers(0, header_end - 1) if draw(st.integers(0, 9)) < 8 else st.integers(0, size - 1)
        flips = draw(st.lists(st.tuples(region, st.integers(1, 255)), min_size=1, max_size=8))
        return ("flip", tuple(flips))
    category = draw(st.sampled_from(sorted(c for c, places in slots.items() if places)))
    offset, fmt, label = draw(st.sampled_from(slots[category]))
    (original,) = struct.unpack_from(fmt, data, offset)
    value = draw(forged_values(fmt, original, size))
    return ("forge", offset, fmt, value, label)


def mutate_gguf(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind == "truncate":
        return data[: mutation[1]]
    if kind == "flip":
        out = bytearray(data)
        for offset, mask in mutation[1]:
            out[offset] ^= mask
        return bytes(out)
    _, offset, fmt, value, _label = mutation
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


# --- a model folder: model.safetensors, config.json, tokenizer.tiktoken ---

WEIRD_JSON = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    6.0,
    0.5,
    -3.5,
    1e308,
    math.nan,
    math.inf,
    2**31,
    2**63,
    2**64,
    10**30,
    -(10**30),
    "6",
    "",
    "x" * 50,
    [],
    [1],
    [None],
    {},
    {"a": 1},
]


def _weird():
    return st.one_of(st.sampled_from(WEIRD_JSON), st.integers(-(2**70), 2**70), st.text(max_size=8))


def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack_from("<Q", data, 0)
    return json.loads(data[8 : 8 + length]), data[8 + length :]


@st.composite
def safetensors_mutation(draw, data: bytes):
    header, _ = safetensors_parts(data)
    (length,) = struct.unpack_from("<Q", data, 0)
    names = sorted(k for k in header if k != "__metadata__")
    kind = draw(st.sampled_from(["truncate", "flip", "length", "shape", "offsets", "dtype", "entry", "json"]))
    if kind == "truncate":
        return ("truncate", draw(st.one_of(st.integers(0, length + 16), st.integers(0, len(data) - 1))))
    if kind == "flip":
        region = st.integers(0, length + 7) if draw(st.integers(0, 9)) < 8 else st.integers(0, len(data) - 1)
        return ("flip", tuple(draw(st.lists(st.tuples(region, st.integers(1, 255)), min_size=1, max_size=8))))
    if kind == "length":
        value = draw(
            st.one_of(
                st.sampled_from(
                    [0, 1, 2, length - 1, length + 1, len(data) - 8, len(data), 100_000_001, 2**63, 2**64 - 1]
                ),
                st.integers(0, 2**64 - 1),
            )
        )
        return ("length", value)
    name = draw(st.sampled_from(names))
    entry = header[name]
    if kind == "shape":
        shape = entry["shape"]
        value = draw(
            st.one_of(
                st.sampled_from(
                    [
                        [],
                        [0],
                        [-1],
                        [2**40, 2**40],
                        [2**64],
                        shape[::-1],
                        shape + [1],
                        [1] + shape,
                        [math.prod(shape)],
                        ["a"],
                        None,
                        3,
                        [1.5],
                        [True] * len(shape),
                    ]
                ),
                st.lists(st.integers(-2, 2**33), max_size=3),
                _weird(),
            )
        )
        return ("json", name, "shape", value)
    if kind == "offsets":
        begin, end = entry["data_offsets"]
        value = draw(
            st.one_of(
                st.sampled_from(
                    [
                        [0, 0],
                        [end, begin],
                        [-1, end],
                        [begin, 2**64],
                        [begin, end + 1],
                        [begin - 1, end - 1],
                        [begin],
                        [begin, end, 0],
                        None,
                        "0",
                        [0.0, float(end - begin)],
                        [2**70, 2**70],
                    ]
                ),
                st.lists(st.integers(-2, len(data) + 8), min_size=2, max_size=2),
                _weird(),
            )
        )
        return ("json", name, "data_offsets", value)
    if kind == "dtype":
        value = draw(
            st.one_of(
                st.sampled_from(
                    ["F16", "BF16", "F32", "F64", "I64", "U8", "BOOL", "F8_E4M3", "XX", "f32", None, 4, [], ""]
                ),
                _weird(),
            )
        )
        return ("json", name, "dtype", value)
    if kind == "entry":
        return ("entry", name, draw(st.sampled_from(["delete", "rename", "duplicate", "replace"])), draw(_weird()))
    return (
        "whole",
        draw(st.sampled_from([[], "x", 1, None, {}, {"__metadata__": 5}, {"__metadata__": {"format": []}}])),
    )


def mutate_safetensors(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind in ("truncate", "flip"):
        return mutate_gguf(data, mutation)
    if kind == "length":
        return struct.pack("<Q", mutation[1]) + data[8:]
    header, body = safetensors_parts(data)
    if kind == "json":
        _, name, field, value = mutation
        header[name] = {**header[name], field: value}
    elif kind == "entry":
        _, name, how, value = mutation
        if how == "delete":
            del header[name]
        elif how == "rename":
            header[name + ".x"] = header.pop(name)
        elif how == "duplicate":
            header[name + "_copy"] = dict(header[name])
        else:
            header[name] = value
    else:
        header = mutation[1]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def config_paths(config: dict) -> list[tuple[str, ...]]:
    paths = []
    for key, value in config.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, sub) for sub in value]
    return paths


@st.composite
def config_mutation(draw, data: bytes):
    config = json.loads(data)
    kind = draw(st.sampled_from(["value", "value", "value", "delete", "whole", "truncate", "flip"]))
    if kind == "truncate":
        return ("truncate", draw(st.integers(0, len(data) - 1)))
    if kind == "flip":
        return (
            "flip",
            tuple(
                draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=4))
            ),
        )
    if kind == "whole":
        return ("whole", draw(st.sampled_from([[], [config], "config", 3, None, 1.5, {}])))
    path = draw(st.sampled_from(config_paths(config)))
    if kind == "delete":
        return ("delete", path)
    return ("value", path, draw(_weird()))


def mutate_config(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind in ("truncate", "flip"):
        return mutate_gguf(data, mutation)
    if kind == "whole":
        return json.dumps(mutation[1]).encode()
    config = json.loads(data)
    *parents, last = mutation[1]
    node = config
    for key in parents:
        node = node[key]
    if kind == "delete":
        del node[last]
    else:
        node[last] = mutation[2]
    return json.dumps(config, indent=2).encode()


GARBAGE_LINES = [
    b"",
    b" ",
    b"x",
    b"AA== 5",
    b"AA== -1",
    b"AA== 99999999999999999999",
    b"AA==",
    b"AA== 1 2",
    b"!!!! 3",
    b"QQ== 0",
    b"YQ== 1e3",
    b"YQ== 0x10",
    b"\xff\xfe 3",
    b"\x00",
    b"PHxlbmR8Pg== 4096",
    b"PHxlbmR8Pg== 4095",
    b"=" * 4 + b" 7",
    b"YWJj 4096",
    b"YWJj 4097",
    b"\t\t",
    b"YQ==\t12",
]


@st.composite
def tokenizer_mutation(draw, data: bytes):
    n_lines = data.count(b"\n")
    kind = draw(st.sampled_from(["insert", "insert", "replace", "delete", "rank", "truncate", "flip", "swap"]))
    line = draw(st.integers(0, n_lines - 1))
    if kind in ("insert", "replace"):
        text = draw(st.one_of(st.sampled_from(GARBAGE_LINES), st.binary(max_size=12)))
        return (kind, line, text)
    if kind == "delete":
        return ("delete", line, draw(st.integers(1, 3)))
    if kind == "rank":
        return (
            "rank",
            line,
            draw(
                st.one_of(
                    st.sampled_from([-1, 0, 255, 256, n_lines - 1, n_lines, 2**31, 2**64, 10**30]),
                    st.integers(-5, n_lines + 5),
                )
            ),
        )
    if kind == "swap":
        return ("swap", line, draw(st.integers(0, n_lines - 1)))
    if kind == "truncate":
        return ("truncate", draw(st.integers(0, len(data) - 1)))
    return (
        "flip",
        tuple(draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=6))),
    )


def mutate_tokenizer(data: bytes, mutation) -> bytes:
    kind = mutation[0]
    if kind in ("truncate", "flip"):
        return mutate_gguf(data, mutation)
    lines = data.split(b"\n")
    line = mutation[1]
    if kind == "insert":
        lines.insert(line, mutation[2])
    elif kind == "replace":
        lines[line] = mutation[2]
    elif kind == "delete":
        del lines[line : line + mutation[2]]
    elif kind == "rank":
        lines[line] = lines[line].split(b" ")[0] + b" " + str(mutation[2]).encode()
    elif kind == "swap":
        other = mutation[2]
        lines[line], lines[other] = lines[line], lines[other].split(b" ")[0] + b" " + lines[line].split(b" ")[-1]
    return b"\n".join(lines)


FOLDER_FILES = {
    "model.safetensors": (safetensors_mutation, mutate_safetensors),
    "config.json": (config_mutation, mutate_config),
    "tokenizer.tiktoken": (tokenizer_mutation, mutate_tokenizer),
}


# --- running the child and the CLI ---


def run_child(cases: list[dict], workdir: Path) -> dict[int, dict]:
    """Run the batch; on a crash or a hang, fail naming the case that was running."""
    manifest = workdir / "manifest.json"
    manifest.write_text(
        json.dumps([{k: str(v) if k == "path" else v for k, v in c.items() if k != "mutation"} for c in cases])
    )
    env = {**os.environ, "FUZZ_MEMORY_LIMIT_BYTES": str(MEMORY_LIMIT), "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, str(CHILD), str(manifest)],
            capture_output=True,
            text=True,
            timeout=BATCH_TIMEOUT_S,
            cwd=ROOT,
            env=env,
        )
        stdout, stderr, rc, timed_out = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as error:
        stdout = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        stderr, rc, timed_out = "", None, True
    records, started = {}, None
    for line in stdout.splitlines():
        record = json.loads(line)
        if record.get("start"):
            started = record["case"]
        else:
            records[record["case"]] = record
    by_case = {c["case"]: c for c in cases}
    if timed_out or rc != 0:
        culprit = by_case.get(started) if started is not None and started not in records else None
        why = f"timed out after {BATCH_TIMEOUT_S}s" if timed_out else f"exit code {rc}"
        pytest.fail(f"the loader child {why} on case {culprit and describe(culprit)}\n{stderr[-3000:]}")
    return records


def describe(case: dict) -> str:
    return f"#{case['case']} {case['source']}: {case['mutation']!r} ({case['path']})"


def check_records(cases: list[dict], records: dict[int, dict]) -> None:
    outcomes = [records.get(c["case"], {}).get("outcome") for c in cases]
    print(f"{len(cases)} cases: " + ", ".join(f"{o} {outcomes.count(o)}" for o in sorted(set(map(str, outcomes)))))
    if os.environ.get("CHATAPP_FUZZ_LOG"):
        with open(os.environ["CHATAPP_FUZZ_LOG"], "a") as log:
            for case in cases:
                log.write(json.dumps({**records.get(case["case"], {}), "what": describe(case)}) + "\n")
    problems = []
    for case in cases:
        record = records.get(case["case"])
        if record is None:
            problems.append(f"{describe(case)}: no outcome")
        elif record["outcome"] not in ("ok", "error"):
            problems.append(f"{describe(case)}: {record['message']}\n{record.get('traceback', '')}")
        elif record["outcome"] == "error" and (not record["message"].strip() or "internal error" in record["message"]):
            problems.append(f"{describe(case)}: a bad one-line error: {record['message']!r}")
    assert not problems, f"{len(problems)} of {len(cases)} cases failed:\n" + "\n".join(problems)


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def start_cli(case: dict, home: Path) -> subprocess.Popen:
    env = {**os.environ, "CHATAPP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "chatapp", "run", "--model", str(case["path"]), "--max-tokens", "2", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=limit_memory,
    )


def cli_problem(case: dict, proc: subprocess.Popen) -> str | None:
    """None if the CLI behaved: exit 0 and a quiet stderr, or exit 1 and one 'chatapp: error:' line."""
    try:
        _stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return f"{describe(case)}: the CLI timed out after {CLI_TIMEOUT_S}s"
    lines = stderr.splitlines()
    if proc.returncode == 0 and not stderr.strip():
        return None
    if (
        proc.returncode == 1
        and len(lines) == 1
        and lines[0].startswith("chatapp: error:")
        and "internal error" not in lines[0]
    ):
        return None
    return f"{describe(case)}: rc {proc.returncode}, stderr:\n{stderr[-2000:]}"


# --- the sources ---


@pytest.fixture(scope="module")
def sources(tiny_model_dir, tmp_path_factory):
    from tests.helpers.foreign_gguf import write_foreign_gguf

    gguf_path, _report = exported(tiny_model_dir, "q8_0")
    foreign = write_foreign_gguf(tmp_path_factory.mktemp("fuzz-sources") / "qwen2.gguf", "qwen2")
    ggufs = {}
    for name, path in (("tiny-q8_0.gguf", gguf_path), ("qwen2.gguf", foreign)):
        data = Path(path).read_bytes()
        slots, header_end = gguf_slots(data)
        ggufs[name] = (data, slots, header_end)
    folder = {name: (tiny_model_dir / name).read_bytes() for name in FOLDER_FILES}
    return Sources({"gguf": ggufs, "folder_dir": tiny_model_dir, "folder": folder})


class Sources(dict):
    """The original files; a short repr, as hypothesis prints the test's arguments on a failure."""

    def __repr__(self) -> str:
        return f"Sources({', '.join(self['gguf'])}, {self['folder_dir']})"


def write_gguf_cases(data, sources, root: Path, count: int = BATCH) -> list[dict]:
    cases = []
    for i in range(count):
        name = data.draw(st.sampled_from(sorted(sources["gguf"])), label="source")
        original, slots, header_end = sources["gguf"][name]
        mutation = data.draw(gguf_mutation(original, slots, header_end), label=f"case {i}")
        path = root / f"case{i}.gguf"
        path.write_bytes(mutate_gguf(original, mutation))
        cases.append({"case": i, "kind": "gguf", "path": path, "source": name, "mutation": mutation})
    return cases


def write_folder_cases(data, sources, root: Path, count: int = BATCH) -> list[dict]:
    cases = []
    for i in range(count):
        name = data.draw(st.sampled_from(sorted(FOLDER_FILES)), label="file")
        strategy, mutate = FOLDER_FILES[name]
        original = sources["folder"][name]
        mutation = data.draw(strategy(original), label=f"case {i}")
        folder = root / f"case{i}"
        folder.mkdir()
        for other in FOLDER_FILES:
            if other != name:
                try:
                    os.link(sources["folder_dir"] / other, folder / other)
                except OSError:
                    shutil.copyfile(sources["folder_dir"] / other, folder / other)
        (folder / name).write_bytes(mutate(original, mutation))
        cases.append({"case": i, "kind": "folder", "path": folder, "source": name, "mutation": mutation})
    return cases


def fresh_dir(tmp_path_factory, prefix: str) -> Path:
    return tmp_path_factory.mktemp(prefix)


@fuzz_settings(0.5)
@given(data=st.data())
def test_damaged_gguf_files_give_one_line_errors(data, sources, tmp_path_factory):
    root = fresh_dir(tmp_path_factory, "fuzz-gguf")
    cases = write_gguf_cases(data, sources, root)
    check_records(cases, run_child(cases, root))
    shutil.rmtree(root, ignore_errors=True)


@fuzz_settings(0.45)
@given(data=st.data())
def test_damaged_model_folders_give_one_line_errors(data, sources, tmp_path_factory):
    root = fresh_dir(tmp_path_factory, "fuzz-folder")
    cases = write_folder_cases(data, sources, root)
    check_records(cases, run_child(cases, root))
    shutil.rmtree(root, ignore_errors=True)


@settings(
    max_examples=1,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_the_cli_on_damaged_models_prints_one_line(data, sources, tmp_path_factory):
    """A smaller sample through `chatapp run`: exit 0 or 1, stderr nothing or one 'chatapp: error:' line."""
    root = fresh_dir(tmp_path_factory, "fuzz-cli")
    n = max(4, TOTAL_CASES // 25)
    (root / "gguf").mkdir()
    (root / "folder").mkdir()
    cases = write_gguf_cases(data, sources, root / "gguf", n - n // 3) + write_folder_cases(
        data, sources, root / "folder", n // 3
    )
    problems = []
    for pair in (cases[i : i + 2] for i in range(0, len(cases), 2)):  # two at a time, one per core
        running = [(case, start_cli(case, root / "home")) for case in pair]
        problems += [p for p in (cli_problem(case, proc) for case, proc in running) if p]
    assert not problems, f"{len(problems)} of {len(cases)} CLI runs misbehaved:\n" + "\n".join(problems)
    shutil.rmtree(root, ignore_errors=True)
