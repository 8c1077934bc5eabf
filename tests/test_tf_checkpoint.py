"""miniberts.tf_checkpoint against bundles written by real TensorFlow (tests/fixtures/google_tf_tiny, see its README).

No TensorFlow here: the ground truth is what TensorFlow's own reader returned when the fixture was made.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from miniberts.errors import CheckpointError
from miniberts.tf_checkpoint import FOOTER_SIZE, _block_handle, read_tf_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "google_tf_tiny"
PREFIX = FIXTURE / "bert_model.ckpt"
SHARDED = FIXTURE / "sharded" / "model.ckpt"


@pytest.fixture(scope="module")
def tensors():
    return read_tf_checkpoint(PREFIX)


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURE / "expected.npz")


def copy_bundle(prefix: Path, to: Path) -> Path:
    for path in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(path, to / path.name)
    return to / prefix.name


def test_every_variable_matches_what_tensorflow_wrote(tensors, expected):
    manifest = json.loads(expected["manifest_json"].item())
    assert sorted(tensors) == sorted(manifest)
    for name, want in manifest.items():
        got = tensors[name]
        assert (got.dtype.name, list(got.shape)) == (want["dtype"], want["shape"]), name
        flat = np.asarray(got, np.float64).ravel()
        assert flat.sum() == pytest.approx(want["sum"], rel=1e-12, abs=1e-12), name
        # Weighted by position, so a transposed or shifted read does not pass.
        assert flat @ np.arange(1, flat.size + 1) == pytest.approx(want["weighted_sum"], rel=1e-12, abs=1e-12), name


def test_verbatim_values(tensors, expected):
    names = [key.removeprefix("variable/") for key in expected.files if key.startswith("variable/")]
    assert len(names) == 3
    for name in names:
        np.testing.assert_array_equal(tensors[name], expected["variable/" + name])
        assert tensors[name].dtype == expected["variable/" + name].dtype


def test_training_state_is_returned_too(tensors):
    step = tensors["global_step"]
    assert (step.dtype, step.shape, step) == (np.int64, (), 1000)
    for name in ("bert/pooler/dense/bias", "bert/embeddings/LayerNorm/gamma"):
        for slot in ("adam_m", "adam_v"):
            assert tensors[f"{name}/{slot}"].shape == tensors[name].shape
    assert tensors["bert/embeddings/word_embeddings"].shape == (1200, 64)
    assert tensors["cls/seq_relationship/output_weights"].shape == (2, 64)


def test_two_shards_and_every_dtype():
    tensors = read_tf_checkpoint(str(SHARDED))  # a str prefix works as well as a Path
    expected = np.load(SHARDED.parent / "expected.npz")
    assert sorted(tensors) == sorted(expected.files)
    for name in expected.files:
        np.testing.assert_array_equal(tensors[name], expected[name], err_msg=name)
        assert tensors[name].dtype == expected[name].dtype, name
    assert tensors["b/float16"].dtype == np.float16
    assert tensors["b/bfloat16"].dtype == np.float32  # numpy has no bfloat16
    assert tensors["a/int64_scalar"] == 2**40 + 7
    assert tensors["a/float32"].flags.writeable


def test_missing_index_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: no such file") as error:
        read_tf_checkpoint(tmp_path / "bert_model.ckpt")
    assert str(tmp_path) in str(error.value)


def test_missing_data_shard(tmp_path):
    prefix = copy_bundle(SHARDED, tmp_path)
    (tmp_path / "model.ckpt.data-00001-of-00002").unlink()
    with pytest.raises(CheckpointError, match=r"model\.ckpt\.data-00001-of-00002: no such file"):
        read_tf_checkpoint(prefix)


def test_truncated_data_file(tmp_path):
    prefix = copy_bundle(PREFIX, tmp_path)
    data = tmp_path / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001: corrupt or truncated \(variable '.+' needs bytes"):
        read_tf_checkpoint(prefix)


@pytest.mark.parametrize("damage", ["bad magic", "truncated", "empty"])
def test_corrupt_index(tmp_path, damage):
    prefix = copy_bundle(PREFIX, tmp_path)
    index = tmp_path / "bert_model.ckpt.index"
    data = index.read_bytes()
    damaged = {"bad magic": data[:-1] + b"\0", "truncated": data[: len(data) // 2], "empty": b""}[damage]
    index.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: corrupt or truncated \(bad magic number"):
        read_tf_checkpoint(prefix)


def test_garbled_index_entries(tmp_path):
    prefix = copy_bundle(PREFIX, tmp_path)
    index = tmp_path / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    data[10:200] = b"\xff" * 190  # unterminated varints where the first entries were
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: corrupt or truncated \("):
        read_tf_checkpoint(prefix)


def test_compressed_block_is_refused(tmp_path):
    prefix = copy_bundle(PREFIX, tmp_path)
    index = tmp_path / "bert_model.ckpt.index"
    data = bytearray(index.read_bytes())
    _metaindex, pos = _block_handle(data, len(data) - FOOTER_SIZE)
    (offset, size), _ = _block_handle(data, pos)
    data[offset + size] = 1  # the index block's trailer now says Snappy
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: block at byte \d+ is compressed \(type 1\)"):
        read_tf_checkpoint(prefix)


def test_unsupported_dtype_names_variable_and_dtype(tmp_path):
    prefix = copy_bundle(SHARDED, tmp_path)
    index = tmp_path / "model.ckpt.index"
    data = index.read_bytes()
    # The entry for "a/int32" is stored as the key suffix "int32" (prefix-compressed) and then its BundleEntryProto,
    # which starts with field 1 (dtype) = 3 (DT_INT32); make it 7 (DT_STRING).
    assert data.count(b"int32\x08\x03") == 1
    index.write_bytes(data.replace(b"int32\x08\x03", b"int32\x08\x07"))
    with pytest.raises(CheckpointError, match=r"variable 'a/int32' has dtype string; supported: float32"):
        read_tf_checkpoint(prefix)

