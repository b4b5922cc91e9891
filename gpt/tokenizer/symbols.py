"""Symbol tokenizer: one id per word of a fixed list, for the synthetic tasks (gpt/tasks/).

A task such as modular addition has no text: its tokens are the residues 0..p-1 and "=".
This tokenizer names each id by a word, so checkpoints, sample.py and the inspect views
can show a sequence as " 3 5 =" and read one back. Encoding splits the text on whitespace
and looks each word up; decoding writes each token as a space and its word (the way
GPT-2's tokens carry their leading space), so decode(encode(s)) is s with single spaces.

Left out: special tokens, unknown words (a word outside the list raises).
"""
from .base import Tokenizer, TokenizerError, check_text


class SymbolTokenizer(Tokenizer):
    """Word <-> id over a fixed list of whitespace-free words."""

    kind = "symbols"

    def __init__(self, symbols):
        """`symbols`: the vocabulary, distinct non-empty words without whitespace (id = position)."""
        symbols = list(symbols)
        if not symbols or any(not isinstance(s, str) or not s or s.split() != [s] for s in symbols) \
                or len(set(symbols)) != len(symbols):
            raise TokenizerError(f"a symbol vocabulary needs distinct words without whitespace, got {symbols[:10]!r}")
        check_text("".join(symbols))
        super().__init__([f" {s}".encode("utf-8") for s in symbols], {})
        self.symbols = symbols
        self._ids = {s: i for i, s in enumerate(symbols)}

    def _encode_ordinary(self, text):
        words = text.split()
        unknown = [w for w in words if w not in self._ids]
        if unknown:
            raise TokenizerError(f"{unknown[0]!r} is not a symbol of this vocabulary "
                                 f"({', '.join(self.symbols[:5])}, ...; words are separated by spaces)")
        return [self._ids[w] for w in words]

    def _body(self):
        return {"symbols": self.symbols}

    @classmethod
    def from_dict(cls, d):
        if d.get("special_tokens") != {}:
            raise TokenizerError("a symbol tokenizer has no special tokens (special_tokens must be {})")
        if not isinstance(d.get("symbols"), list):
            raise TokenizerError("a symbol tokenizer's \"symbols\" must be a list of words, its vocabulary")
        return cls(d["symbols"])
