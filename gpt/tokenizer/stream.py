"""Encoding a large UTF-8 file into a .bin file of token ids, a few pieces in memory at a time;
decoding ids into text as they arrive one at a time.

The text is cut into pieces where encoding them separately gives exactly the ids of the whole
(base.py's text_pieces says where and why). The output file holds the ids as raw little-endian
uint16 (uint32 for vocabularies over 65536), like nanoGPT's train.bin; memory stays at a few
pieces, whatever the file's size.

TextStream turns ids that arrive one by one (a model generating) into text, holding back the
bytes of a character that a byte-level token left unfinished; everything it gives out joins
into exactly `tokenizer.decode` of all the ids.

Left out: parallel encoding of pieces, custom patterns that look behind (their cuts are
not guaranteed exact).
"""
import codecs
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


class TextStream:
    """Ids in, complete UTF-8 text out: the bytes of a character split across tokens wait for the rest."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, ids):
        """The text that ids (a list of ints) complete; "" while a character is still unfinished."""
        return self.utf8.decode(self.tokenizer.decode_bytes(ids))

    def flush(self):
        """What is held back at the end (an unfinished character, as U+FFFD); "" when nothing is."""
        return self.utf8.decode(b"", final=True)
