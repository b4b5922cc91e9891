"""Encoding large texts piece by piece: into an array, or from a file into a .bin file.

A text is cut into pieces only where encoding the pieces separately gives exactly the ids
of the whole: right after a newline that sits between two non-whitespace characters
("x\\ny"). There, GPT-2's and cl100k's patterns always end a chunk (after "\\n" or
"x\\n"), and both patterns look at no text before a chunk's start, so the next piece scans
as the whole text would. (A whitespace run like "\\n\\n" before the cut would not be safe:
GPT-2's `\\s+(?!\\S)` splits it differently when it ends the text.) A text with no such
newline stays one piece. Special tokens hold no newline (the tokenizer checks), so none
spans a cut.

The output file holds the ids as raw little-endian uint16 (uint32 for vocabularies over
65536), like nanoGPT's train.bin; memory stays at a few pieces, whatever the file's size.

Left out: parallel encoding of pieces, custom patterns that look behind (their cuts are
not guaranteed exact).
"""
import functools
import os

import numpy as np
import regex

from .base import TokenizerError, token_dtype

PIECE_CHARS = 1 << 20
_LAST_CUT = regex.compile(r"\S\n\S", regex.REVERSE)  # searched from the end


def text_pieces(blocks):
    """Regroup consecutive text `blocks` into pieces that end at safe cuts."""
    buf = ""
    for block in blocks:
        buf += block
        m = _LAST_CUT.search(buf, max(0, len(buf) - len(block) - 2))
        if m:
            cut = m.start() + 2
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf


def string_blocks(text, size=PIECE_CHARS):
    """`text` in consecutive slices of `size` characters."""
    return (text[i:i + size] for i in range(0, len(text), size))


def encode_pieces(tokenizer, pieces, allowed_special=frozenset(), disallowed_special="all"):
    """Yield each piece's ids as an array of the vocabulary's dtype."""
    dtype = token_dtype(tokenizer.vocab_size)
    for piece in pieces:
        yield np.array(tokenizer.encode(piece, allowed_special, disallowed_special), dtype=dtype)


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
