"""Character-level tokenizer: one id per distinct character of the training text.

The vocabulary is the sorted set of characters, so "\\n" and " " come first; this is the
tokenizer of char-level Shakespeare. It is saved as the vocabulary string itself.

Special tokens (e.g. the chat format's "<|user|>", gpt/chat/template.py) take the ids after
the characters, as in BPE; they are saved beside the vocabulary. Files written before
specials existed hold "special_tokens": {} and load unchanged.

Left out: an "unknown" token (a character outside the vocabulary raises).
"""
from .base import Tokenizer, TokenizerError, check_text


class CharTokenizer(Tokenizer):
    """Character <-> id over a fixed alphabet."""

    kind = "char"

    def __init__(self, chars, special_tokens=None):
        """`chars`: the vocabulary, a sequence of distinct characters (id = position);
        `special_tokens` {text: id} with ids len(chars), len(chars) + 1, ..."""
        chars = list(chars)
        check_text("".join(chars))
        if not chars or any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise TokenizerError(f"a char vocabulary needs distinct single characters, got {chars[:20]!r}")
        super().__init__([c.encode("utf-8") for c in chars], special_tokens or {})
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text):
        """The vocabulary of `text`: its distinct characters, sorted."""
        check_text(text)
        if not text:
            raise TokenizerError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    def _encode_ordinary(self, text):
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - self._ids.keys())
            raise TokenizerError(f"{len(unknown)} characters are not in the vocabulary: "
                                 f"{''.join(unknown[:20])!r}") from None

    def _body(self):
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d.get("chars"), str):
            raise TokenizerError("a char tokenizer's \"chars\" must be a string, its vocabulary")
        return cls(d["chars"], d.get("special_tokens"))
