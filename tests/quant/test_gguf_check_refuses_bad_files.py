"""A corrupt, truncated or foreign file gives a one-line error before llama.cpp sees it."""

from __future__ import annotations

import struct

import pytest

from quant.gguf_check import GGUFFileError, check_gguf
from tests.helpers.gguf_exports import exported
from tests.helpers.paths import ROOT


@pytest.fixture(scope="module")
def good_file(tiny_model_dir):
    return exported(tiny_model_dir, "q8_0")[0]


def write_gguf_with(path, arch="gpt2", tensors=None, kv=None):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        writer.add_string(key, value)
    for name, shape in (tensors or {"token_embd.weight": (8, 4)}).items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def damaged_files(tmp_path, good_file) -> dict:
    data = good_file.read_bytes()
    files = {}

    def put(name, content):
        files[name] = tmp_path / f"{name}.gguf"
        files[name].write_bytes(content)

    put("empty", b"")
    put("text", b"hello, this is not a model\n" * 10)
    put("png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    header = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    put("safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 4)
    put("version_99", data[:4] + struct.pack("<I", 99) + data[8:])
    put("truncated_header", data[:200])
    put("truncated_half", data[: len(data) // 2])
    put("truncated_last_byte", data[:-1])
    put("huge_counts", data[:8] + struct.pack("<QQ", 2**62, 2**62) + data[24:])
    garbled = bytearray(data)
    garbled[24:4000] = bytes((b * 7 + 13) % 256 for b in garbled[24:4000])
    put("garbled_metadata", bytes(garbled))
    files["unknown_arch"] = write_gguf_with(tmp_path / "unknown_arch.gguf", arch="not-a-real-arch")
    files["gpt2_wrong_tensors"] = write_gguf_with(tmp_path / "gpt2_wrong.gguf", arch="gpt2")
    files["adapter"] = write_gguf_with(tmp_path / "adapter.gguf", arch="llama", kv={"general.type": "adapter"})
    files["folder"] = tmp_path
    files["missing"] = tmp_path / "missing.gguf"
    return files


def test_damaged_and_foreign_files_give_one_line_errors(tmp_path, good_file):
    for name, path in damaged_files(tmp_path, good_file).items():
        with pytest.raises(GGUFFileError) as caught:
            check_gguf(path)
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and len(message) < 400, (name, message)


def test_the_backends_check_before_llama_cpp_loads(tmp_path, good_file):
    from model.training.corpus import Work
    from quant.gguf_validation_loss import evaluate_gguf
    from quant.llama_engine import LlamaEngine

    files = damaged_files(tmp_path, good_file)
    for name in ("truncated_half", "truncated_last_byte", "png", "unknown_arch", "gpt2_wrong_tensors"):
        with pytest.raises(GGUFFileError):
            LlamaEngine.load(files[name])
        with pytest.raises(GGUFFileError):
            evaluate_gguf(files[name], [Work("w", "some text")])


def test_a_good_file_passes(good_file):
    info = check_gguf(good_file)
    assert info.chatapp and info.chat_format_version == 1 and info.context_length == 256
    assert info.vocab_size == 4096 and info.file_type == 7 and info.version == 3
    assert check_gguf(good_file).size_bytes == good_file.stat().st_size


def test_a_newer_chat_format_is_refused(tmp_path, tiny_model_dir):
    import gguf

    from quant.gguf_check import read_gguf

    path, _ = exported(tiny_model_dir, "f16")
    reader = read_gguf(path)
    field = reader.fields["chatapp.chat_format_version"]
    data = bytearray(path.read_bytes())
    value_at = int(field.offset) + sum(int(part.nbytes) for part in field.parts[:-1])
    data[value_at : value_at + 4] = struct.pack("<I", 2)
    newer = tmp_path / "newer.gguf"
    newer.write_bytes(bytes(data))
    assert gguf.GGUFReader(newer).fields["chatapp.chat_format_version"].contents() == 2
    with pytest.raises(GGUFFileError, match="chat format version 2 is newer"):
        check_gguf(newer)


FORGED_COUNT_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # without the header walk, the reader took 16 GB
sys.path.insert(0, {root!r})
from pathlib import Path
from chatapp.models.listing import gguf_label
from quant.gguf_check import GGUFFileError, check_gguf
try:
    check_gguf({path!r})
except GGUFFileError as error:
    print("check:", error)
print("label:", gguf_label(Path({path!r})))
"""


@pytest.mark.parametrize("forge", ["array count", "string length"])
def test_a_forged_count_or_length_is_refused_before_anything_is_allocated(tmp_path, good_file, forge):
    import subprocess
    import sys
    from pathlib import Path

    data = bytearray(Path(good_file).read_bytes())
    key = b"tokenizer.ggml.tokens"
    at = data.index(key) + len(key)  # then: value type (array), item type (string), count, then the strings
    if forge == "array count":
        struct.pack_into("<Q", data, at + 8, 2**64 - 1)
    else:
        struct.pack_into("<Q", data, at + 16, 2**62)  # the first string's length
    path = tmp_path / "forged.gguf"
    path.write_bytes(bytes(data))
    root = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", FORGED_COUNT_CHILD.format(root=root, path=str(path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    check, label = result.stdout.splitlines()
    assert check == f"check: {path}: damaged or truncated GGUF file (truncated header)"
    assert label.startswith("label: unreadable")
