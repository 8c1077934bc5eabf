"""Read Google's TensorFlow (TF1 "tensor bundle") checkpoints into numpy, without TensorFlow.

A checkpoint `prefix` is two kinds of file (tensorflow/core/util/tensor_bundle/tensor_bundle.cc, naming.cc):
- `prefix.index`: an immutable sorted table in LevelDB's SSTable format (leveldb doc/table_format.md, as vendored in
  tensorflow/tsl/lib/io/table*.cc): data blocks of prefix-compressed key/value entries, an index block pointing at
  them, and a 48-byte footer of two varint BlockHandles plus the magic 0xdb4775248b80fb57. Keys are variable names;
  each value is a serialized BundleEntryProto (tensorflow/core/protobuf/tensor_bundle.proto) saying where the
  variable's bytes are; the empty key holds the BundleHeaderProto (number of shards, endianness).
- `prefix.data-0000k-of-0000n`: the raw little-endian tensor bytes, concatenated.

TensorFlow writes tensor bundles uncompressed (TableBuilderOptions in tensor_bundle.cc), so no Snappy is needed. The
protobufs are decoded by hand: only varint, length-delimited and fixed-width fields occur. Checksums (the block
trailers' and each entry's crc32c) are not verified: the standard library has no CRC-32C, and sizes and offsets are
checked against the files, which catches truncation.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # metaindex + index BlockHandles, zero-padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte masked crc32c after every block
NO_COMPRESSION = 0

# tensorflow/core/framework/types.proto DataType, by enum value (only to name an unsupported dtype in an error).
TF_DTYPE_NAMES = ("invalid float32 float64 int32 uint8 int16 int8 string complex64 int64 bool qint8 quint8 qint32 "
                  "bfloat16 qint16 quint16 uint16 complex128 float16 resource variant uint32 uint64").split()
BFLOAT16 = 14
# DataType enum -> how its bytes are stored. numpy has no bfloat16: read its raw 16 bits, widen to float32 below.
STORAGE_DTYPES = {1: np.dtype("<f4"), 3: np.dtype("<i4"), 9: np.dtype("<i8"), BFLOAT16: np.dtype("<u2"),
                  19: np.dtype("<f2")}


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable in the checkpoint at `prefix` (e.g. `dir/bert_model.ckpt`), optimizer slots included.

    Arrays keep their stored dtype (float32, float16, int32, int64), except bfloat16, which comes back as the float32
    it widens to exactly.
    """
    prefix = Path(prefix)
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise CheckpointError(f"{index_path}: no such file (expected a TF checkpoint prefix such as "
                              f"dir/bert_model.ckpt, with dir/bert_model.ckpt.index beside its data files)")
    try:
        table = dict(_table_items(index_path, index_path.read_bytes()))
        header = _fields(table.pop(b""))
        entries = {key.decode(): _Entry(_fields(value)) for key, value in table.items()}
    except (IndexError, KeyError, ValueError, struct.error) as e:
        raise CheckpointError(f"{index_path}: corrupt or truncated (tensor-bundle index: {type(e).__name__}: {e})") from None
    num_shards = _last(header, 1)
    if _last(header, 2) != 0:
        raise CheckpointError(f"{index_path}: big-endian checkpoint; only little-endian ones are supported")

    tensors = {}
    for shard in range(num_shards):
        data_path = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
        if not data_path.is_file():
            raise CheckpointError(f"{data_path}: no such file (the index {index_path.name} names {num_shards} shards)")
        with open(data_path, "rb") as f:
            for name, entry in entries.items():
                if entry.shard_id == shard:
                    tensors[name] = _read_tensor(f, data_path, name, entry)
    for name, entry in entries.items():
        if name not in tensors:
            raise CheckpointError(f"{index_path}: variable {name!r} is in shard {entry.shard_id}, "
                                  f"but the header says there are {num_shards} shards")
    return {name: tensors[name] for name in entries}  # the index's sorted order, whatever the shard


class _Entry:
    """The fields of a BundleEntryProto we use; proto3 omits zero values, hence the defaults."""

    def __init__(self, fields: dict[int, list]):
        self.dtype = _last(fields, 1)
        shape = _fields(_last(fields, 2, b""))  # TensorShapeProto: repeated Dim dim = 2, each Dim has int64 size = 1
        self.shape = tuple(_last(_fields(dim), 1) for dim in shape.get(2, []))
        self.shard_id, self.offset, self.size = _last(fields, 3), _last(fields, 4), _last(fields, 5)
        self.partitioned = 7 in fields  # `slices`: the tensor is split across several entries


def _read_tensor(f, data_path: Path, name: str, entry: _Entry) -> np.ndarray:
    if entry.partitioned:
        raise CheckpointError(f"{data_path}: variable {name!r} is saved partitioned (slices); not supported")
    if entry.dtype not in STORAGE_DTYPES:
        dtype_name = TF_DTYPE_NAMES[entry.dtype] if entry.dtype < len(TF_DTYPE_NAMES) else f"enum {entry.dtype}"
        raise CheckpointError(f"{data_path}: variable {name!r} has dtype {dtype_name}; supported: float32, float16, "
                              f"bfloat16, int32, int64")
    dtype = STORAGE_DTYPES[entry.dtype]
    nbytes = math.prod(entry.shape) * dtype.itemsize
    if entry.size != nbytes:
        raise CheckpointError(f"{data_path}: corrupt or truncated (variable {name!r} of shape {list(entry.shape)} "
                              f"should take {nbytes} bytes, the index says {entry.size})")
    # Checked before allocating, so that a damaged index cannot ask for more memory than the file holds.
    file_size = os.fstat(f.fileno()).st_size
    if entry.offset + entry.size > file_size:
        raise CheckpointError(f"{data_path}: corrupt or truncated (variable {name!r} needs bytes "
                              f"[{entry.offset}, {entry.offset + entry.size}) of a {file_size}-byte file)")
    array = np.empty(entry.shape, dtype)
    f.seek(entry.offset)
    # readinto fills the array in place: no second copy of large embedding tables, and the result is writable.
    f.readinto(memoryview(array.reshape(-1)).cast("B"))
    if entry.dtype == BFLOAT16:
        return (array.astype(np.uint32) << 16).view(np.float32)  # bfloat16 is the top half of a float32
    return array


def _table_items(path: Path, data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) for every entry of an SSTable, in key order."""
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path}: corrupt or truncated (bad magic number: not a TF checkpoint index)")
    _metaindex, pos = _block_handle(data, len(data) - FOOTER_SIZE)  # tensor bundles have no meta blocks
    index_handle, _ = _block_handle(data, pos)
    for _separator, handle in _block_items(path, data, index_handle):
        yield from _block_items(path, data, _block_handle(handle, 0)[0])


def _block_items(path: Path, data: bytes, handle: tuple[int, int]) -> Iterator[tuple[bytes, bytes]]:
    """Entries of one block: varint (shared, unshared, value length), the unshared key suffix, the value."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE or size < 4:
        raise CheckpointError(f"{path}: corrupt or truncated (block at byte {offset} runs past the end of the file)")
    if data[offset + size] != NO_COMPRESSION:
        raise CheckpointError(f"{path}: block at byte {offset} is compressed (type {data[offset + size]}); "
                              f"only uncompressed tables, as TensorFlow writes them, are supported")
    block = data[offset:offset + size]
    num_restarts = struct.unpack_from("<I", block, size - 4)[0]
    # The restart array (uint32 offsets of uncompressed keys) allows binary search; a full scan ignores it.
    end = size - 4 - 4 * num_restarts
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_size]
        pos += value_size
    if pos != end:
        raise CheckpointError(f"{path}: corrupt or truncated (block at byte {offset}: entries overrun its restart array)")


def _block_handle(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(data, pos)
    size, pos = _varint(data, pos)
    return (offset, size), pos


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Little-endian base-128 integer; an IndexError past the end of `data` means a corrupt file."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(message: bytes) -> dict[int, list]:
    """Protobuf wire format: field number -> its values (ints, or bytes for length-delimited fields)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        wire_type = tag & 7
        if wire_type == 0:
            value, pos = _varint(message, pos)
        elif wire_type == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos:pos + length], pos + length
        elif wire_type in (1, 5):  # fixed64 / fixed32, e.g. BundleEntryProto.crc32c
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(message[pos:pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        fields.setdefault(tag >> 3, []).append(value)
    if pos != len(message):
        raise ValueError("protobuf field runs past the end of its message")
    return fields


def _last(fields: dict[int, list], number: int, default=0):
    # Protobuf semantics: a repeated scalar field's last occurrence wins; an absent one has the default value.
    return fields.get(number, [default])[-1]
