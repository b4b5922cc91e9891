"""Encoding a large UTF-8 file into a .bin file of token ids, a few pieces in memory at a time.

The text is cut into pieces where encoding them separately gives exactly the ids of the whole
(base.py's text_pieces says where and why). The output file holds the ids as raw little-endian
uint16 (uint32 for vocabularies over 65536), like nanoGPT's train.bin; memory stays at a few
pieces, whatever the file's size.

Left out: parallel encoding of pieces, custom patterns that look behind (their cuts are
not guaranteed exact).
"""
import functools
import os

from .base import PIECE_CHARS, TokenizerError, encode_pieces, text_pieces


def encode_file(tokenizer, in_path, out_path, allowed_special=frozenset(), disallowed_special="all",
                piece_chars=PIECE_CHARS):
    """Encode the UTF-8 text file `in_path` into the raw id file `out_path` (written atomically);
    returns the number of tokens."""
    n, tmp = 0, f"{out_path}.tmp"
    try:
        with open(in_path, encoding="utf-8", newline="") as f, open(tmp, "wb") as out:
            blocks = iter(functools.partial(f.read, piece_chars), "")
            for ids in encode_pieces(tokenizer, text_pieces(blocks), allowed_special, disallowed_special):
                ids.tofile(out)
                n += len(ids)
        os.replace(tmp, out_path)
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{in_path}: not UTF-8 text ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n
