"""The interface every tokenizer shares: special tokens, encode/decode, save/load.

A tokenizer maps text to a list of integer ids and back. Subclasses pass each
ordinary token's bytes to `__init__` and provide `_encode_ordinary` (text without special
tokens -> ids) and their JSON body; this module does the rest:

- special tokens (e.g. "<|endoftext|>") are cut out of the text before the subclass sees it,
  with tiktoken's rules: `allowed_special` says which are encoded as their own id,
  `disallowed_special` (default "all" = every special not allowed) which raise when they
  appear; pass `disallowed_special=()` to encode them as ordinary text; `with_special_tokens`
  gives a copy with more specials, after every existing id (gpt/chat adds its chat tokens so);
- `decode` joins the tokens' bytes and replaces broken UTF-8 with U+FFFD, as GPT-2 does;
- save/load: one JSON file, {"format", "version", "type", ...}; `load_tokenizer` picks the
  class from "type";
- `encode_array` encodes a large text piece by piece, cut only where encoding the pieces
  separately gives exactly the ids of the whole: right after a newline that sits between two
  non-whitespace characters ("x\\ny"). There, GPT-2's and cl100k's patterns always end a chunk
  (after "\\n" or "x\\n"), and both patterns look at no text before a chunk's start, so the next
  piece scans as the whole text would. (A whitespace run like "\\n\\n" before the cut would not
  be safe: GPT-2's `\\s+(?!\\S)` splits it differently when it ends the text.) A text with no
  such newline stays one piece. Special tokens hold no newline (checked here), so none spans a
  cut. stream.py uses the same pieces to encode files.

Left out: normalization (NFC etc.), offsets/alignment, batch encoding with threads.
"""
import functools
import json

import numpy as np
import regex

from ..safetensors import write_file

FORMAT = "nanograd-gpt-tokenizer"
VERSION = 1
NONE_RAISE = "none_raise"  # minbpe's name for tiktoken's default: no special allowed, all raise
PIECE_CHARS = 1 << 20
_LAST_CUT = regex.compile(r"\S\n\S", regex.REVERSE)  # searched from the end


class TokenizerError(ValueError):
    """Bad input, a bad tokenizer file or a misuse; the message names the problem."""


def token_dtype(vocab_size):
    """The smallest unsigned integer type that holds every id: little-endian uint16 up to 65536
    tokens, else uint32."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def check_text(text):
    """Raise TokenizerError unless `text` is a str that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(text, str):
        raise TokenizerError(f"expected text as str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"text has a lone surrogate {text[e.start]!r} at index {e.start}; "
                             "it is not valid Unicode and has no UTF-8 bytes") from None


def text_pieces(blocks):
    """Regroup consecutive text `blocks` into pieces that end at safe cuts (see the module docstring)."""
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


@functools.lru_cache(maxsize=64)
def special_regex(specials):
    """A regex matching any of `specials` (a frozenset), longest first so none hides another."""
    alternatives = sorted(specials, key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in alternatives))


class Tokenizer:
    """Shared behaviour; `kind` names the subclass in saved files."""

    kind = None
    _kinds = {}  # kind -> subclass, for load_tokenizer

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer._kinds[cls.kind] = cls

    def __init__(self, token_bytes, special_tokens):
        """`token_bytes[i]`: the bytes of ordinary token i; `special_tokens`: {text: id}, the
        specials taking the ids right after the ordinary ones."""
        n = len(token_bytes)
        if not (isinstance(special_tokens, dict) and all(type(i) is int for i in special_tokens.values())):
            raise TokenizerError(f"special tokens must map text to integer ids, got {special_tokens!r:.80}")
        for text, i in special_tokens.items():
            if not text or "\n" in text:
                raise TokenizerError(f"special token {text!r}: must be non-empty without a newline")
            if not n <= i < n + len(special_tokens):
                raise TokenizerError(f"special token {text!r} has id {i}; specials must take the "
                                     f"ids {n}..{n + len(special_tokens) - 1}")
        by_id = {i: s.encode("utf-8") for s, i in special_tokens.items()}
        if len(by_id) != len(special_tokens):
            raise TokenizerError(f"special tokens share ids: {special_tokens}")
        self.special_tokens = dict(special_tokens)
        self._bytes_of = list(token_bytes) + [by_id[i] for i in range(n, n + len(by_id))]
        self.vocab_size = len(self._bytes_of)

    def with_special_tokens(self, names):
        """A copy of this tokenizer with each of `names` not yet special appended as a special
        token, taking the ids after every existing one (so existing ids keep their meaning)."""
        new = [s for s in dict.fromkeys(names) if s not in self.special_tokens]
        specials = {**self.special_tokens, **{s: self.vocab_size + k for k, s in enumerate(new)}}
        return load_tokenizer_dict({**self.to_dict(), "special_tokens": specials}, type(self).__name__)

    @property
    def eot_token(self):
        """The id of <|endoftext|>, or None when this tokenizer has no such token."""
        return self.special_tokens.get("<|endoftext|>")

    # ---- encoding -------------------------------------------------------------------------

    def encode(self, text, allowed_special=frozenset(), disallowed_special="all"):
        """Text -> list of ids; specials follow tiktoken's rules (see the module docstring)."""
        check_text(text)
        allowed = self._specials_arg(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = frozenset(self.special_tokens) - allowed
        else:
            disallowed = self._specials_arg(disallowed_special, "disallowed_special")
        if disallowed and (m := special_regex(disallowed).search(text)):
            raise TokenizerError(
                f"text contains the special token {m.group()!r} at index {m.start()}, which is not "
                f"allowed. To encode it as its special id pass allowed_special={{{m.group()!r}}} "
                "(or 'all'); to encode it as ordinary text pass disallowed_special=().")
        if not allowed:
            return self._encode_ordinary(text)
        ids, start = [], 0
        for m in special_regex(allowed).finditer(text):
            ids += self._encode_ordinary(text[start:m.start()])
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        return ids + self._encode_ordinary(text[start:])

    def encode_array(self, text, allowed_special=frozenset(), disallowed_special="all"):
        """Like `encode`, as a uint16/uint32 array, built piece by piece to save memory."""
        pieces = text_pieces(string_blocks(text))
        arrays = list(encode_pieces(self, pieces, allowed_special, disallowed_special))
        return np.concatenate(arrays) if arrays else np.zeros(0, token_dtype(self.vocab_size))

    def _specials_arg(self, arg, name):
        """Normalize an allowed/disallowed_special argument to a frozenset of known specials."""
        if arg == "all":
            return frozenset(self.special_tokens)
        if arg == NONE_RAISE:
            return frozenset()
        if isinstance(arg, str):
            raise TokenizerError(f"{name}={arg!r}: use 'all', {NONE_RAISE!r} or a set of special tokens")
        unknown = set(arg) - set(self.special_tokens)
        if unknown:
            raise TokenizerError(f"{name} names unknown special tokens {sorted(unknown)}; "
                                 f"this tokenizer has {sorted(self.special_tokens)}")
        return frozenset(arg)

    def _encode_ordinary(self, text):
        raise NotImplementedError

    # ---- decoding -------------------------------------------------------------------------

    def decode_bytes(self, ids):
        """Ids -> the raw bytes they stand for (may end in the middle of a character)."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        try:
            if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
                raise IndexError
            return b"".join([self._bytes_of[i] for i in ids])
        except (IndexError, TypeError):
            bad = [i for i in ids if not (isinstance(i, int) and 0 <= i < self.vocab_size)]
            raise TokenizerError(f"ids must be integers in [0, {self.vocab_size}); got {bad[:5]}") from None

    def decode(self, ids):
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD, so this never fails on ids."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- save / load ----------------------------------------------------------------------

    def to_dict(self):
        """The JSON-able form: header, the subclass's body, and the special tokens."""
        return {"format": FORMAT, "version": VERSION, "type": self.kind, **self._body(),
                "special_tokens": self.special_tokens}

    def to_json(self):
        """The saved file's content as a str (checkpoints embed it)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)

    def save(self, path):
        """Write `to_json()` to `path` (UTF-8) atomically: a full disk is one DiskFullError line."""
        write_file(path, self.to_json().encode("utf-8"))

    def _body(self):
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"


def load_tokenizer_dict(d, source="tokenizer"):
    """Build the right tokenizer from a `to_dict()` form; `source` names it in errors."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise TokenizerError(f"{source}: not a {FORMAT} file (no \"format\": \"{FORMAT}\" header)")
    if d.get("version") != VERSION:
        raise TokenizerError(f"{source}: format version {d.get('version')!r:.40} is not supported "
                             f"(this code reads version {VERSION})")
    cls = Tokenizer._kinds.get(d.get("type")) if isinstance(d.get("type"), str) else None
    if cls is None:
        raise TokenizerError(f"{source}: unknown tokenizer type {d.get('type')!r:.40}; "
                             f"known: {sorted(k for k in Tokenizer._kinds if k)}")
    try:
        return cls.from_dict(d)
    except TokenizerError as e:
        raise TokenizerError(f"{source}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TokenizerError(f"{source}: corrupt {cls.kind} tokenizer ({type(e).__name__}: {e})") from None


def load_tokenizer_json(s, source="tokenizer JSON"):
    """Build a tokenizer from `to_json()`'s string."""
    try:
        d = json.loads(s)
    except (ValueError, RecursionError) as e:  # bad JSON, an integer of 4300+ digits, deep nesting
        raise TokenizerError(f"{source}: not valid JSON, truncated or corrupt? ({type(e).__name__}: {e})") from None
    return load_tokenizer_dict(d, source)


def load_tokenizer(path):
    """Read a file written by `save`; returns a CharTokenizer or BPETokenizer as recorded."""
    try:
        with open(path, encoding="utf-8") as f:
            s = f.read()
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 text, corrupt? ({e})") from None
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e.strerror}") from None
    return load_tokenizer_json(s, str(path))
