"""Tests for the TensorFlow-free checkpoint reader (hf_tinylm.conversion.tf_checkpoint).

Real files: OpenAI's GPT-2 124M index (+ the first 3 MiB of its data file) and a tiny GPT-2
checkpoint written by TensorFlow itself, with its Hugging Face twin. Feature and refusal
cases use small bundles written by ``write_bundle`` below.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from hf_tinylm.conversion.tf_checkpoint import (
    TFCheckpointError,
    TFCheckpointReader,
    masked_crc32c,
    resolve_checkpoint_prefix,
)

DATA_FILE = "model.ckpt.data-00000-of-00001"


@pytest.fixture
def meta_124m(shared_data: Path) -> Path:
    return shared_data / "gpt2-124M-tf-checkpoint-meta"


@pytest.fixture
def tiny_openai(shared_data: Path) -> Path:
    return shared_data / "gpt2-openai-tf-tiny" / "openai"


@pytest.fixture
def tiny_copy(tiny_openai: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny TF checkpoint's prefix."""
    for name in ("checkpoint", "model.ckpt.index", DATA_FILE):
        shutil.copy(tiny_openai / name, tmp_path / name)
    return tmp_path / "model.ckpt"


# --- OpenAI's real GPT-2 124M index ------------------------------------------------------


def test_real_124m_index_lists_every_tensor_as_the_published_listing(meta_124m):
    listing = json.loads((meta_124m / "model.ckpt.index.listing.json").read_text())["tensors"]
    # The folder holds no data file under its real name: the index alone is enough to list.
    entries = TFCheckpointReader(meta_124m / "model.ckpt").entries()

    assert len(entries) == 148
    assert list(entries) == list(listing)  # same names, same (sorted) order
    for name, entry in entries.items():
        expected = listing[name]
        assert entry.name == name
        assert entry.dtype == "DT_FLOAT" and expected["dtype"] == 1
        assert entry.shape == tuple(expected["shape"])
        assert (entry.shard_id, entry.offset, entry.size, entry.crc32c) == (
            expected["shard_id"],
            expected["offset"],
            expected["size"],
            expected["crc32c"],
        )


def test_real_124m_index_totals_124m_params_in_the_shapes_hparams_describe(meta_124m):
    hparams = json.loads((meta_124m / "hparams.json").read_text())
    entries = TFCheckpointReader(resolve_checkpoint_prefix(meta_124m)).entries()

    assert sum(entry.num_elements for entry in entries.values()) == 124_439_808
    n_embd = hparams["n_embd"]
    assert entries["model/wte"].shape == (hparams["n_vocab"], n_embd)
    assert entries["model/wpe"].shape == (hparams["n_ctx"], n_embd)
    layers = {name.split("/")[1] for name in entries if name.startswith("model/h")}
    assert layers == {f"h{i}" for i in range(hparams["n_layer"])}
    assert entries["model/h11/attn/c_attn/w"].shape == (1, n_embd, 3 * n_embd)
    assert entries["model/h11/mlp/c_fc/w"].shape == (1, n_embd, 4 * n_embd)


@pytest.fixture
def real_prefix_3mib(meta_124m: Path, tmp_path: Path) -> Path:
    """The real 124M index beside the first 3 MiB of its data file, under the proper names."""
    (tmp_path / "model.ckpt.index").symlink_to(meta_124m / "model.ckpt.index")
    (tmp_path / DATA_FILE).symlink_to(meta_124m / f"{DATA_FILE}.first3MiB")
    return tmp_path / "model.ckpt"


def test_first_real_tensor_passes_its_checksum_and_holds_the_real_weights(
    real_prefix_3mib, shared_data
):
    bias = TFCheckpointReader(real_prefix_3mib).read("model/h0/attn/c_attn/b")

    # An independent public dump of the same weights (big-endian float32), q|k|v concatenated.
    dump = shared_data / "gpt2-124M-real-weights-h0" / "decoder1"
    parts = [np.fromfile(dump / f"att.{part}.b.dat", ">f4") for part in ("query", "key", "value")]
    assert bias.dtype == np.float32 and bias.shape == (2304,)
    np.testing.assert_array_equal(bias, np.concatenate(parts))


def test_tensor_past_the_end_of_a_truncated_data_file_fails_naming_tensor_and_file(
    real_prefix_3mib,
):
    reader = TFCheckpointReader(real_prefix_3mib)
    with pytest.raises(TFCheckpointError, match="truncated") as info:
        reader.read("model/h0/attn/c_attn/w")  # bytes [9216, 7087104) of a 3 MiB file
    assert "'model/h0/attn/c_attn/w'" in str(info.value)
    assert str(reader.data_path(0)) in str(info.value)


def test_missing_data_file_fails_naming_tensor_and_file(meta_124m):
    reader = TFCheckpointReader(meta_124m / "model.ckpt")
    with pytest.raises(TFCheckpointError, match="does not exist") as info:
        reader.read("model/ln_f/g")
    assert "'model/ln_f/g'" in str(info.value)
    assert DATA_FILE in str(info.value)


# --- the tiny checkpoint written by TensorFlow, and its HF twin ----------------------------


def hf_name(tf_name: str) -> str:
    """The HF GPT2LMHeadModel parameter holding OpenAI tensor ``tf_name``."""
    parts = tf_name.removeprefix("model/").split("/")
    if parts[0] in ("wte", "wpe"):
        return f"transformer.{parts[0]}.weight"
    leaf = {"w": "weight", "g": "weight", "b": "bias"}[parts[-1]]
    if parts[0].startswith("h"):
        return ".".join(["transformer", "h", parts[0][1:], *parts[1:-1], leaf])
    return f"transformer.{parts[0]}.{leaf}"  # ln_f


def test_tf_written_checkpoint_equals_its_hf_twin_bit_for_bit(tiny_openai):
    reader = TFCheckpointReader(resolve_checkpoint_prefix(tiny_openai))
    hf = load_file(tiny_openai.parent / "hf" / "model.safetensors")

    tensors = {name: reader.read(name) for name in reader}
    assert len(tensors) == 28
    assert sorted(hf_name(name) for name in tensors) == sorted(hf)
    for name, array in tensors.items():
        if name.endswith("/w"):  # Conv1D weight: [1, in, out] -> [in, out]
            array = array.squeeze(0)
        expected = hf[hf_name(name)]
        assert array.dtype == expected.dtype == np.float32, name
        np.testing.assert_array_equal(array, expected, err_msg=name)


def test_flipped_data_byte_fails_the_checksum_naming_the_tensor(tiny_copy):
    reader = TFCheckpointReader(tiny_copy)
    victim = reader.entries()["model/h1/mlp/c_fc/w"]
    data_path = reader.data_path(0)
    with data_path.open("r+b") as file:
        file.seek(victim.offset + victim.size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0x01]))

    with pytest.raises(TFCheckpointError, match="checksum mismatch") as info:
        reader.read(victim.name)
    assert "'model/h1/mlp/c_fc/w'" in str(info.value)
    assert str(data_path) in str(info.value)
    # Unverified reads still work, and the other tensors are untouched.
    assert reader.read(victim.name, verify=False).shape == (1, 64, 256)
    reader.read("model/h1/mlp/c_fc/b")


def corrupt_bad_magic(index: bytes) -> bytes:
    return index[:-1] + bytes([index[-1] ^ 0xFF])


def corrupt_truncate(index: bytes) -> bytes:
    return index[: len(index) // 2]


def corrupt_truncate_below_the_footer(index: bytes) -> bytes:
    return index[:20]


def corrupt_flip_key_byte(index: bytes) -> bytes:
    at = index.index(b"model/")  # inside the data block: caught by the block checksum
    return index[:at] + bytes([index[at] ^ 0x20]) + index[at + 1 :]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (corrupt_bad_magic, "bad table magic"),
        (corrupt_truncate, "truncated"),
        (corrupt_truncate_below_the_footer, "too short for a table footer"),
        (corrupt_flip_key_byte, "checksum mismatch in the table block"),
    ],
)
def test_corrupted_index_is_rejected_naming_the_file(tiny_copy, corrupt, message):
    index_path = Path(f"{tiny_copy}.index")
    index_path.write_bytes(corrupt(index_path.read_bytes()))
    with pytest.raises(TFCheckpointError, match=message) as info:
        TFCheckpointReader(tiny_copy)
    assert str(index_path) in str(info.value)


# --- finding the checkpoint in a folder -------------------------------------------------


def test_resolve_follows_the_checkpoint_state_file(tiny_openai):
    assert resolve_checkpoint_prefix(tiny_openai) == tiny_openai / "model.ckpt"


def test_resolve_falls_back_to_the_only_index_file(tmp_path):
    write_bundle(tmp_path / "weights", {"x": (1, (2,), np.zeros(2, "<f4").tobytes())})
    assert resolve_checkpoint_prefix(tmp_path) == tmp_path / "weights"


def test_folder_without_a_checkpoint_is_rejected(tmp_path):
    with pytest.raises(TFCheckpointError, match="no TF checkpoint"):
        resolve_checkpoint_prefix(tmp_path)


def test_checkpoint_state_file_naming_a_missing_prefix_is_rejected(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    with pytest.raises(TFCheckpointError, match=r"model\.ckpt\.index does not exist"):
        resolve_checkpoint_prefix(tmp_path)


def test_reader_given_a_folder_points_at_resolve_checkpoint_prefix(tmp_path):
    with pytest.raises(TFCheckpointError, match="resolve_checkpoint_prefix"):
        TFCheckpointReader(tmp_path)


# --- small bundles written here: dtypes and refusals ----------------------------------------

TABLE_MAGIC = 0xDB4775248B80FB57


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def proto_field(number: int, value: int | bytes) -> bytes:
    """A protobuf field: varint for an int, length-delimited for bytes."""
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def table_block(items: list[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    """A table block (keys not prefix-compressed, one restart point) plus its trailer."""
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
    body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    kind = bytes([compression])
    return body + kind + masked_crc32c(body + kind).to_bytes(4, "little")


def write_bundle(prefix: Path, tensors: dict, *, endianness=0, sliced=(), compression=0) -> Path:
    """Write a one-shard bundle of ``{name: (dtype enum, shape, raw bytes)}``, as TF lays it out."""
    data = bytearray()
    items = [(b"", proto_field(1, 1) + proto_field(2, endianness))]  # the BundleHeaderProto
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        shape_proto = b"".join(proto_field(2, proto_field(1, dim)) for dim in shape)
        entry = proto_field(1, dtype) + proto_field(2, shape_proto)
        entry += proto_field(4, len(data)) + proto_field(5, len(raw))
        entry += varint(6 << 3 | 5) + masked_crc32c(raw).to_bytes(4, "little")  # fixed32
        if name in sliced:
            entry += proto_field(7, b"")
        items.append((name.encode(), entry))
        data += raw
    data_block = table_block(items, compression)
    index_block = table_block([(items[-1][0], varint(0) + varint(len(data_block) - 5))])
    handles = varint(0) + varint(0) + varint(len(data_block)) + varint(len(index_block) - 5)
    footer = handles.ljust(40, b"\0") + TABLE_MAGIC.to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(data_block + index_block + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data)
    return prefix


def test_reads_every_common_dtype_with_its_shape(tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 256.0, -0.125]], dtype="<f4")
    bfloat16_bits = (values.view("<u4") >> 16).astype("<u2")  # these values are exact in bfloat16
    tensors = {
        "double": (2, (2, 3), values.astype("<f8").tobytes()),
        "half": (19, (2, 3), values.astype("<f2").tobytes()),
        "bfloat16": (14, (2, 3), bfloat16_bits.tobytes()),
        "int32": (3, (3,), np.array([-7, 0, 2**31 - 1], "<i4").tobytes()),
        "int64_scalar": (9, (), np.array(-5, "<i8").tobytes()),
    }
    reader = TFCheckpointReader(write_bundle(tmp_path / "model.ckpt", tensors))

    assert {name: entry.dtype for name, entry in reader.entries().items()} == {
        "bfloat16": "DT_BFLOAT16",
        "double": "DT_DOUBLE",
        "half": "DT_HALF",
        "int32": "DT_INT32",
        "int64_scalar": "DT_INT64",
    }
    for name, dtype in [("double", np.float64), ("half", np.float16), ("bfloat16", np.float32)]:
        array = reader.read(name)
        assert array.dtype == dtype and array.shape == (2, 3), name
        np.testing.assert_array_equal(array, values, err_msg=name)
    np.testing.assert_array_equal(reader.read("int32"), [-7, 0, 2**31 - 1])
    assert reader.read("int64_scalar").shape == ()
    assert reader.read("int64_scalar") == -5


def test_unsupported_dtype_is_refused_naming_the_tensor(tmp_path):
    reader = TFCheckpointReader(
        write_bundle(tmp_path / "model.ckpt", {"words": (7, (1,), b"\x02hi")})
    )
    assert reader.entries()["words"].dtype == "DT_STRING"  # still listed
    with pytest.raises(TFCheckpointError, match=r"'words'.*unsupported dtype DT_STRING"):
        reader.read("words")


def test_sliced_entry_is_refused_naming_the_tensor(tmp_path):
    tensors = {"part": (1, (2,), np.ones(2, "<f4").tobytes())}
    reader = TFCheckpointReader(write_bundle(tmp_path / "model.ckpt", tensors, sliced={"part"}))
    with pytest.raises(TFCheckpointError, match=r"'part'.*slices of a partitioned variable"):
        reader.read("part")


def test_big_endian_bundle_is_refused_naming_the_tensor(tmp_path):
    tensors = {"x": (1, (2,), np.ones(2, ">f4").tobytes())}
    reader = TFCheckpointReader(write_bundle(tmp_path / "model.ckpt", tensors, endianness=1))
    with pytest.raises(TFCheckpointError, match=r"'x'.*big-endian"):
        reader.read("x")


def test_compressed_index_block_is_refused(tmp_path):
    tensors = {"x": (1, (2,), np.ones(2, "<f4").tobytes())}
    with pytest.raises(TFCheckpointError, match=r"compressed \(type 1\)"):
        TFCheckpointReader(write_bundle(tmp_path / "model.ckpt", tensors, compression=1))


def test_unknown_tensor_name_is_an_error(tmp_path):
    reader = TFCheckpointReader(write_bundle(tmp_path / "model.ckpt", {"x": (1, (), b"\0" * 4)}))
    assert list(reader) == ["x"] and "x" in reader and "y" not in reader
    with pytest.raises(TFCheckpointError, match="no tensor 'y'"):
        reader.read("y")
