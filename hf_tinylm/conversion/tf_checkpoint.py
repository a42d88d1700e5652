"""Read TensorFlow V2 checkpoints (tensor bundles) with numpy alone, without TensorFlow.

OpenAI released GPT-2 as a TF1 checkpoint (``model.ckpt.index`` plus
``model.ckpt.data-00000-of-00001``); this reader lets the converter load it without TensorFlow.

Format, as TF's ``BundleWriter`` writes it:

* ``<prefix>.index`` is a LevelDB-style table (SSTable) whose keys are tensor names in sorted
  byte order. The empty key holds a ``BundleHeaderProto``; every other value is a
  ``BundleEntryProto`` saying where that tensor's bytes are and what their checksum is.
* ``<prefix>.data-<shard:05d>-of-<num_shards:05d>`` hold the raw tensors (C order), each at
  ``[offset, offset + size)`` of its shard.

Every checksum is TF's *masked* CRC32C. The protobuf messages are decoded by hand: they are
tiny, and that spares a protobuf dependency.
"""

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

__all__ = [
    "TFCheckpointError",
    "TFCheckpointReader",
    "TensorBundleEntry",
    "masked_crc32c",
    "resolve_checkpoint_prefix",
]

# Table footer: metaindex and index block handles (varint pairs, zero-padded to 40 bytes),
# then this 8-byte little-endian magic number.
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
# Each block is followed by a 1-byte compression type (0 = none) and the masked CRC32C
# of the block contents plus that type byte.
_BLOCK_TRAILER_SIZE = 5

# TF DataType enum (tensorflow/core/framework/types.proto), 1..23.
_DTYPE_NAMES = (
    "DT_INVALID", "DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_UINT8", "DT_INT16", "DT_INT8",
    "DT_STRING", "DT_COMPLEX64", "DT_INT64", "DT_BOOL", "DT_QINT8", "DT_QUINT8", "DT_QINT32",
    "DT_BFLOAT16", "DT_QINT16", "DT_QUINT16", "DT_UINT16", "DT_COMPLEX128", "DT_HALF",
    "DT_RESOURCE", "DT_VARIANT", "DT_UINT32", "DT_UINT64",
)  # fmt: skip
# How the bytes of each readable dtype are stored (little-endian bundles only).
_NUMPY_DTYPES = {
    "DT_FLOAT": np.dtype("<f4"),
    "DT_DOUBLE": np.dtype("<f8"),
    "DT_HALF": np.dtype("<f2"),
    "DT_BFLOAT16": np.dtype("<u2"),  # raw bits; widened to float32 by TFCheckpointReader.read
    "DT_COMPLEX64": np.dtype("<c8"),
    "DT_COMPLEX128": np.dtype("<c16"),
    "DT_INT8": np.dtype("i1"),
    "DT_INT16": np.dtype("<i2"),
    "DT_INT32": np.dtype("<i4"),
    "DT_INT64": np.dtype("<i8"),
    "DT_UINT8": np.dtype("u1"),
    "DT_UINT16": np.dtype("<u2"),
    "DT_UINT32": np.dtype("<u4"),
    "DT_UINT64": np.dtype("<u8"),
    "DT_BOOL": np.dtype("?"),
}

_CRC_CHUNK = 1 << 20
_CHECKPOINT_PATH_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


class TFCheckpointError(ValueError):
    """A TF checkpoint is missing, corrupt, or uses a feature this reader does not support."""


@dataclass(frozen=True)
class TensorBundleEntry:
    """One tensor's record in the index (a decoded ``BundleEntryProto``)."""

    name: str
    dtype: str  # TF DataType name, e.g. "DT_FLOAT"
    shape: tuple[int, ...]
    shard_id: int
    offset: int  # the tensor's bytes are [offset, offset + size) of its shard's data file
    size: int
    crc32c: int  # masked CRC32C of those bytes
    sliced: bool = False  # saved as slices of a partitioned variable: not readable here

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of ``data``, masked as TF and LevelDB store it (rotated, plus a constant)."""
    view = memoryview(data).cast("B")
    crc = 0
    for start in range(0, len(view), _CRC_CHUNK):
        # google_crc32c accepts only immutable bytes: feed it bounded-size copies.
        crc = google_crc32c.extend(crc, bytes(view[start : start + _CRC_CHUNK]))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def resolve_checkpoint_prefix(folder: str | os.PathLike[str]) -> Path:
    """Find the checkpoint prefix (e.g. ``folder/model.ckpt``) of a TF checkpoint folder.

    Follows the folder's ``checkpoint`` state file like ``tf.train.latest_checkpoint`` (a
    relative path there is relative to the folder); without one, takes the only ``*.index``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TFCheckpointError(f"{folder} is not a folder")
    state_file = folder / "checkpoint"
    if state_file.is_file():
        match = _CHECKPOINT_PATH_LINE.search(state_file.read_text())
        if match is None:
            raise TFCheckpointError(f"{state_file} has no model_checkpoint_path line")
        prefix = folder / match.group(1)  # an absolute path replaces the folder
        if not Path(f"{prefix}.index").is_file():
            raise TFCheckpointError(
                f"{state_file} names {prefix}, but {prefix}.index does not exist"
            )
        return prefix
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise TFCheckpointError(
            f"no TF checkpoint to pick in {folder}: no 'checkpoint' file, and not exactly one "
            f"*.index file (found: {found})"
        )
    return indexes[0].with_suffix("")


class TFCheckpointReader:
    """The tensors of one TF V2 checkpoint, e.g. ``TFCheckpointReader("models/124M/model.ckpt")``.

    The (small) index is parsed on construction, so listing works without the data files.
    Data files are opened only by :meth:`read`, which reads just the requested tensor's bytes.
    Iterating yields tensor names in the index's sorted order.
    """

    def __init__(self, prefix: str | os.PathLike[str]):
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        try:
            table = self.index_path.read_bytes()
        except FileNotFoundError:
            hint = (
                " (that is a folder: see resolve_checkpoint_prefix)" if self.prefix.is_dir() else ""
            )
            raise TFCheckpointError(f"no checkpoint index {self.index_path}{hint}") from None
        try:
            self._num_shards, self._big_endian, self._entries = _parse_index(table)
        except TFCheckpointError as err:
            raise TFCheckpointError(f"{self.index_path}: {err}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.prefix)!r})"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entries(self) -> dict[str, TensorBundleEntry]:
        """Every tensor's index record, by name, in sorted-name order."""
        return dict(self._entries)

    def data_path(self, shard_id: int) -> Path:
        """The data file holding shard ``shard_id``."""
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self._num_shards:05d}")

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """Tensor ``name`` as a new, writable numpy array, reading only its bytes.

        With ``verify`` the bytes must match the index's checksum, so a corrupt or mismatched
        data file fails here instead of yielding silently wrong weights. DT_BFLOAT16 comes back
        as float32 (exact: numpy has no bfloat16).
        """
        entry = self._entries.get(name)
        if entry is None:
            raise TFCheckpointError(f"no tensor {name!r} in {self.index_path}")
        dtype = self._storage_dtype(entry)
        path = self.data_path(entry.shard_id)
        buffer = bytearray(entry.size)
        try:
            with open(path, "rb") as file:
                file.seek(entry.offset)
                got = file.readinto(buffer)
                file_size = os.fstat(file.fileno()).st_size
        except FileNotFoundError:
            raise TFCheckpointError(f"tensor {name!r}: data file {path} does not exist") from None
        if got < entry.size:
            raise TFCheckpointError(
                f"tensor {name!r}: data file {path} is truncated: the tensor needs bytes "
                f"[{entry.offset}, {entry.offset + entry.size}) but the file has {file_size}"
            )
        if verify and (crc := masked_crc32c(buffer)) != entry.crc32c:
            raise TFCheckpointError(
                f"checksum mismatch for tensor {name!r} in {path}: the index says "
                f"{entry.crc32c:#010x}, the data gives {crc:#010x}"
            )
        array = np.frombuffer(buffer, dtype).reshape(entry.shape)
        if entry.dtype == "DT_BFLOAT16":
            # bfloat16 is the top half of a float32's bits.
            array = (array.astype("<u4") << 16).view("<f4")
        return array

    def _storage_dtype(self, entry: TensorBundleEntry) -> np.dtype:
        """The numpy dtype of ``entry``'s stored bytes, refusing what this reader cannot decode."""
        where = f"tensor {entry.name!r} in {self.index_path}"
        if self._big_endian:
            raise TFCheckpointError(f"{where}: big-endian bundles are not supported")
        if entry.sliced:
            raise TFCheckpointError(
                f"{where} is saved as slices of a partitioned variable, which is not supported"
            )
        dtype = _NUMPY_DTYPES.get(entry.dtype)
        if dtype is None:
            raise TFCheckpointError(f"{where} has unsupported dtype {entry.dtype}")
        if entry.size != entry.num_elements * dtype.itemsize:
            raise TFCheckpointError(
                f"{where}: the index gives {entry.size} bytes, but shape {list(entry.shape)} "
                f"of {entry.dtype} takes {entry.num_elements * dtype.itemsize}"
            )
        return dtype


# --- index parsing: table layer ----------------------------------------------------------


def _parse_index(table: bytes) -> tuple[int, bool, dict[str, TensorBundleEntry]]:
    """Decode a bundle index into (number of shards, big-endian?, entries by name)."""
    header = None
    entries = {}
    for key, value in _table_items(table):
        if key == b"":
            # BundleHeaderProto: 1 num_shards, 2 endianness (0 little, 1 big), 3 version.
            header = _parse_proto(value)
            continue
        try:
            name = key.decode()
        except UnicodeDecodeError:
            raise TFCheckpointError(f"tensor name {key!r} is not UTF-8") from None
        try:
            entries[name] = _parse_entry(name, value)
        except TFCheckpointError as err:
            raise TFCheckpointError(f"tensor {name!r}: {err}") from None
    if header is None:
        raise TFCheckpointError("no bundle header (the entry with the empty key)")
    num_shards = _int_field(header, 1)
    for entry in entries.values():
        if not 0 <= entry.shard_id < num_shards:
            raise TFCheckpointError(
                f"tensor {entry.name!r} is in shard {entry.shard_id}, "
                f"but the bundle has {num_shards} shards"
            )
    return num_shards, _int_field(header, 2) == 1, entries


def _table_items(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) pairs of a LevelDB-style table, in key order."""
    if len(table) < _FOOTER_SIZE:
        raise TFCheckpointError(f"{len(table)} bytes is too short for a table footer (truncated?)")
    footer = table[-_FOOTER_SIZE:]
    magic = int.from_bytes(footer[-8:], "little")
    if magic != _TABLE_MAGIC:
        raise TFCheckpointError(
            f"bad table magic {magic:#018x}, expected {_TABLE_MAGIC:#018x} "
            "(not a checkpoint index, or truncated)"
        )
    _, _, pos = _read_block_handle(footer, 0)  # the metaindex: bundles keep nothing there
    index_offset, index_size, _ = _read_block_handle(footer, pos)
    # The index block maps a key >= each data block's last key to that block's handle.
    for _, handle in _block_items(_read_block(table, index_offset, index_size)):
        offset, size, _ = _read_block_handle(handle, 0)
        yield from _block_items(_read_block(table, offset, size))


def _read_block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Decode a block handle (offset and size varints) at ``pos``: (offset, size, next pos)."""
    offset, pos = _read_varint(buf, pos)
    size, pos = _read_varint(buf, pos)
    return offset, size, pos


def _read_block(table: bytes, offset: int, size: int) -> bytes:
    """The contents of the block at [offset, offset + size), once its trailer checks out."""
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(table):
        raise TFCheckpointError(
            f"block at byte {offset} runs past the end of the file (truncated?)"
        )
    stored_crc = int.from_bytes(table[end + 1 : end + _BLOCK_TRAILER_SIZE], "little")
    if masked_crc32c(table[offset : end + 1]) != stored_crc:
        raise TFCheckpointError(f"checksum mismatch in the table block at byte {offset}")
    if table[end] != 0:
        raise TFCheckpointError(
            f"block at byte {offset} is compressed (type {table[end]}); "
            "only uncompressed tables are supported"
        )
    return table[offset:end]


def _block_items(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) pairs of a table block, undoing the keys' prefix compression.

    Layout: entries, then uint32 restart offsets, then their uint32 count. Each entry is
    varints (shared key length, unshared key length, value length), the unshared key
    bytes, then the value; restarts only matter for seeking, so a full scan skips them.
    """
    if len(block) < 4:
        raise TFCheckpointError("table block is too short for its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise TFCheckpointError("table block is too short for its restart array")
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _read_varint(block, pos)
        unshared, pos = _read_varint(block, pos)
        value_size, pos = _read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > end:
            raise TFCheckpointError("corrupt table block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


# --- index parsing: protobuf layer -------------------------------------------------------


def _parse_entry(name: str, value: bytes) -> TensorBundleEntry:
    """Decode a BundleEntryProto.

    Fields: 1 dtype, 2 shape (TensorShapeProto), 3 shard_id, 4 offset, 5 size,
    6 crc32c (fixed32), 7 slices. Proto3 omits zero values, e.g. offset 0.
    """
    fields = _parse_proto(value)
    dtype = _int_field(fields, 1)
    shape = _parse_shape(_message_field(fields, 2))
    if any(dim < 0 for dim in shape):
        raise TFCheckpointError(f"shape {list(shape)} is not fully defined")
    return TensorBundleEntry(
        name=name,
        dtype=_DTYPE_NAMES[dtype] if dtype < len(_DTYPE_NAMES) else f"DataType({dtype})",
        shape=shape,
        shard_id=_int_field(fields, 3),
        offset=_int_field(fields, 4),
        size=_int_field(fields, 5),
        crc32c=_int_field(fields, 6),
        sliced=7 in fields,
    )


def _parse_shape(value: bytes) -> tuple[int, ...]:
    """Decode a TensorShapeProto: field 2 is the repeated Dim, whose field 1 is its size."""
    fields = _parse_proto(value)
    if _int_field(fields, 3):
        raise TFCheckpointError("shape has unknown rank")
    dims = fields.get(2, [])
    if not all(isinstance(dim, bytes) for dim in dims):
        raise TFCheckpointError("protobuf field 2 should be a message")
    return tuple(_int_field(_parse_proto(dim), 1, signed=True) for dim in dims)


def _parse_proto(buf: bytes) -> dict[int, list[int | bytes]]:
    """Split a protobuf message into its fields: number -> values in order of appearance.

    Varint and fixed-width values become ints, length-delimited ones bytes.
    """
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        wire_type = tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (1, 5):  # fixed64, fixed32
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise TFCheckpointError("truncated protobuf message")
        fields.setdefault(tag >> 3, []).append(value)
    return fields


def _int_field(fields: dict[int, list[int | bytes]], number: int, signed: bool = False) -> int:
    """The numeric field ``number`` (last one wins, absent means 0), as int64 if ``signed``."""
    value = fields.get(number, [0])[-1]
    if not isinstance(value, int):
        raise TFCheckpointError(f"protobuf field {number} should be a number")
    return value - (1 << 64) if signed and value >= 1 << 63 else value


def _message_field(fields: dict[int, list[int | bytes]], number: int) -> bytes:
    """The embedded-message field ``number`` (absent means empty)."""
    value = fields.get(number, [b""])[-1]
    if not isinstance(value, bytes):
        raise TFCheckpointError(f"protobuf field {number} should be a message")
    return value


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``pos``: (value, next pos)."""
    value = shift = 0
    while pos < len(buf) and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise TFCheckpointError("truncated or overlong varint")
