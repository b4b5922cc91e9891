"""GPT-2's file format: the byte-to-unicode alphabet, vocab.json and merges.txt.

GPT-2 stores byte-level tokens as printable strings: each of the 256 bytes is mapped to one
visible character (printable Latin-1 bytes map to themselves, the others -- space, control
bytes, ... -- to U+0100 and up, so a space is "Ġ" and a newline "Ċ"). Then
  vocab.json   {token string: id}, special tokens such as "<|endoftext|>" written as-is
  merges.txt   "#version: 0.2", then one merge per line, "left right", best (rank 0) first.
This module converts between those files and plain Python data: {token bytes: id},
[(left bytes, right bytes)] and {special: id}; bpe.py builds the tokenizer from that.

Left out: GPT-2's tokenizer_config.json / special_tokens_map.json, added-token flags.
"""
import functools
import json
import os

from ..safetensors import write_file
from .base import TokenizerError

MERGES_HEADER = "#version: 0.2"


@functools.lru_cache(maxsize=1)
def bytes_to_unicode():
    """GPT-2's table byte -> printable character (a list of 256 one-character strings)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = [""] * 256, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@functools.lru_cache(maxsize=1)
def _unicode_to_byte():
    return {c: b for b, c in enumerate(bytes_to_unicode())}


def to_symbols(token):
    """Token bytes -> GPT-2's printable string for them."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def from_symbols(symbols, where):
    """GPT-2's printable string -> token bytes; `where` names the place for the error."""
    decode = _unicode_to_byte()
    try:
        return bytes(decode[c] for c in symbols)
    except KeyError as e:
        raise TokenizerError(f"{where}: {symbols!r} has {e.args[0]!r}, which is not one of "
                             "GPT-2's 256 byte symbols") from None


def parse_vocab(symbols_to_id, where):
    """{GPT-2 symbols: id} -> {token bytes: id}, checking the ids are integers."""
    if not isinstance(symbols_to_id, dict) or not all(type(i) is int for i in symbols_to_id.values()):
        raise TokenizerError(f"{where}: expected an object {{token: integer id}}")
    vocab = {from_symbols(s, where): i for s, i in symbols_to_id.items()}
    if len(vocab) != len(symbols_to_id):
        raise TokenizerError(f"{where}: two entries spell the same bytes")
    return vocab


def parse_merge(line, where):
    """'left right' in GPT-2 symbols -> (left bytes, right bytes)."""
    parts = line.split(" ") if isinstance(line, str) else []
    if len(parts) != 2 or not all(parts):
        raise TokenizerError(f"{where}: expected a merge 'left right', got {line!r}")
    return tuple(from_symbols(p, where) for p in parts)


def format_merge(left, right):
    """(left bytes, right bytes) -> the merges.txt line."""
    return f"{to_symbols(left)} {to_symbols(right)}"


def read_gpt2_files(vocab_json_path, merges_txt_path, special_tokens):
    """Read GPT-2-format files -> ({token bytes: id}, [(left, right) bytes], {special: id}).

    Entries of vocab.json named in `special_tokens` are specials (kept as text); every other
    entry must be a byte-level token."""
    try:
        vocab_json = json.loads(_read_text(vocab_json_path))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{vocab_json_path}: not valid JSON, truncated or corrupt? ({e})") from None
    lines = _read_text(merges_txt_path).split("\n")
    specials = {s: vocab_json.pop(s) for s in special_tokens if isinstance(vocab_json, dict) and s in vocab_json}
    merges = [parse_merge(line, f"{merges_txt_path}, line {n}") for n, line in enumerate(lines, 1)
              if line and not (n == 1 and line.startswith("#version"))]
    return parse_vocab(vocab_json, vocab_json_path), merges, specials


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 text, corrupt? ({e})") from None
    except OSError as e:
        raise TokenizerError(f"cannot read {path}: {e.strerror}") from None


def write_gpt2_files(directory, vocab, merges, specials):
    """Write vocab.json and merges.txt into `directory` (created if missing); returns their paths.

    `vocab` {token bytes: id}, `merges` [(left, right) bytes] best first, `specials` {text: id}."""
    os.makedirs(directory, exist_ok=True)
    entries = {to_symbols(t): i for t, i in vocab.items()} | specials
    vocab_path = os.path.join(directory, "vocab.json")
    merges_path = os.path.join(directory, "merges.txt")
    vocab_json = json.dumps(dict(sorted(entries.items(), key=lambda e: e[1])), ensure_ascii=False)
    merges_txt = "\n".join([MERGES_HEADER, *(format_merge(a, b) for a, b in merges)]) + "\n"
    write_file(vocab_path, vocab_json.encode("utf-8"))  # atomically: a full disk leaves no partial file
    write_file(merges_path, merges_txt.encode("utf-8"))
    return vocab_path, merges_path
