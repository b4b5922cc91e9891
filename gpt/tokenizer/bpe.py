"""Byte-level BPE: training, and encoding that matches GPT-2's tokenizer id for id.

Text is first cut into chunks by a pre-tokenization regex (GPT-2's by default: words with
their leading space, digit runs, punctuation runs, whitespace), so no token crosses a
chunk. Each chunk's UTF-8 bytes start as single-byte tokens; a merge (left, right) -> new
joins two adjacent tokens into one. Merges have ranks: training adds them best first, and
encoding repeatedly applies the lowest-ranked merge present in the chunk (leftmost first)
until none applies.

Training (`train_merges`) counts each distinct chunk once, then keeps pair counts up to date
incrementally: a merge only touches the chunks that contain its pair (found through an
index pair -> chunks), and a lazy heap finds the most frequent pair. Ties go to the
smallest pair (left id, then right id), so training is deterministic. `train_merges_naive`
is the textbook version -- recount every pair after every merge -- kept as the reference
the tests compare against and the benchmark's baseline.

Encoding caches each distinct chunk's ids (a dict, cleared when it grows past CACHE_SIZE),
and runs GPT-2's pattern on ASCII text as an equivalent, faster stdlib `re` pattern.

Left out: dropout, merges across pre-tokenization chunks (SentencePiece style), a minimum
pair frequency, Unicode normalization.
"""
import heapq
import re
import warnings
from collections import Counter, defaultdict
from itertools import chain, repeat

import regex

from .base import Tokenizer, TokenizerError, check_text, special_regex
from .gpt2 import format_merge, parse_merge, parse_vocab, read_gpt2_files, to_symbols, write_gpt2_files

PATTERNS = {
    # GPT-2's, as in openai/gpt-2 encoder.py
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # GPT-4's cl100k_base, as in tiktoken
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
# On ASCII text \p{L} is [A-Za-z], \p{N} is [0-9] and \s is re.ASCII's [ \t\n\r\f\v].
ASCII_EQUIVALENTS = {
    PATTERNS["gpt2"]: r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""",
}
CACHE_SIZE = 200_000


def merge(ids, pair, new):
    """Replace each occurrence of `pair` in `ids`, left to right, by `new` (a new list)."""
    left, right = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if ids[i] == left and i + 1 < n and ids[i + 1] == right:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(words, counts, n_merges, first_id=256):
    """Learn up to `n_merges` merges from distinct chunks `words` (lists of ids, changed in
    place) seen `counts` times; merge k makes id first_id + k. Returns [(left, right)]."""
    stats, where = defaultdict(int), defaultdict(set)  # pair -> count; pair -> word indices
    for i, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            stats[pair] += count
            where[pair].add(i)
    heap = [(-count, pair) for pair, count in stats.items()]
    heapq.heapify(heap)
    merges = []
    while heap and len(merges) < n_merges:
        neg_count, pair = heapq.heappop(heap)
        if stats.get(pair) != -neg_count:
            continue  # stale: the count changed after this entry was pushed
        new = first_id + len(merges)
        merges.append(pair)
        delta = defaultdict(int)
        for i in where.pop(pair):
            old, count = words[i], counts[i]
            words[i] = word = merge(old, pair, new)
            if len(word) == len(old):
                continue  # stale index: an earlier merge removed the pair from this word
            for p in zip(old, old[1:]):
                delta[p] -= count
            for p in zip(word, word[1:]):
                delta[p] += count
                where[p].add(i)
        for p, d in delta.items():
            if d:
                stats[p] += d
                if stats[p]:
                    heapq.heappush(heap, (-stats[p], p))
                else:
                    del stats[p]
    return merges


def train_merges_naive(words, counts, n_merges, first_id=256):
    """Same result as `train_merges`, recounting all pairs before every merge: O(merges x text)."""
    merges = []
    for _ in range(n_merges):
        stats = Counter()
        for word, count in zip(words, counts):
            for pair in zip(word, word[1:]):
                stats[pair] += count
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        merges.append(pair)
        words = [merge(word, pair, first_id + len(merges) - 1) for word in words]
    return merges


def chunker(pattern):
    """A PATTERNS name or regex string -> (regex string, function text -> list of chunks).

    For GPT-2's pattern, ASCII text goes through an equivalent pattern in the standard `re`
    module, which is about twice as fast as `regex` with Unicode classes."""
    source = PATTERNS.get(pattern, pattern)
    try:
        compiled = regex.compile(source)
    except (regex.error, TypeError) as e:
        raise TokenizerError(f"pre-tokenization pattern {pattern!r} is not a valid regex: {e}") from None
    if source not in ASCII_EQUIVALENTS:
        return source, compiled.findall
    ascii_compiled = re.compile(ASCII_EQUIVALENTS[source], re.ASCII)

    def chunks(text):
        return (ascii_compiled if text.isascii() else compiled).findall(text)
    return source, chunks


class BPETokenizer(Tokenizer):
    """Byte-level BPE. Build with `train`, `from_gpt2`, or `load_tokenizer`."""

    kind = "bpe"

    def __init__(self, vocab, merges, special_tokens=None, pattern="gpt2"):
        """`vocab` {token bytes: id} for ids 0..n-1, holding all 256 single bytes; `merges`
        [(left bytes, right bytes)] best first; `special_tokens` {text: id} with ids n, n+1..."""
        self.pattern, self._chunks = chunker(pattern)
        tokens = [None] * len(vocab)
        for token, i in vocab.items():
            if not 0 <= i < len(vocab) or tokens[i] is not None:
                raise TokenizerError(f"vocabulary ids must be 0..{len(vocab) - 1}, each once; "
                                     f"{token!r} has id {i}")
            tokens[i] = token
        missing = [b for b in range(256) if bytes([b]) not in vocab]
        if missing:
            raise TokenizerError(f"vocabulary lacks the single bytes {missing[:10]} (a byte-level "
                                 "vocabulary holds all 256)")
        super().__init__(tokens, special_tokens or {})
        self.vocab, self.merges = dict(vocab), list(merges)
        self._byte_ids = [vocab[bytes([b])] for b in range(256)]
        self._rank, self._merged = self._index_merges()
        self._cache = {}

    def _index_merges(self):
        """(pair of ids -> rank, rank -> merged id), checking every merge and token."""
        rank, merged = {}, []
        for r, (left, right) in enumerate(self.merges):
            for part in (left, right, left + right):
                if part not in self.vocab:
                    raise TokenizerError(f"merge {r} {format_merge(left, right)!r}: "
                                         f"{to_symbols(part)!r} is not in the vocabulary")
            pair = (self.vocab[left], self.vocab[right])
            if pair in rank:
                raise TokenizerError(f"merge {r} {format_merge(left, right)!r} repeats merge {rank[pair]}")
            rank[pair] = r
            merged.append(self.vocab[left + right])
        made = {left + right for left, right in self.merges}
        orphans = [t for t in self.vocab if len(t) > 1 and t not in made]
        if orphans:
            raise TokenizerError(f"{len(orphans)} vocabulary tokens are made by no merge, e.g. "
                                 f"{to_symbols(orphans[0])!r} (merges truncated? or a special token "
                                 "missing from special_tokens?)")
        return rank, merged

    # ---- building -------------------------------------------------------------------------

    @classmethod
    def train(cls, text, vocab_size, special_tokens=("<|endoftext|>",), pattern="gpt2"):
        """Learn merges from `text` until there are `vocab_size` tokens: 256 bytes, the merges,
        then `special_tokens` (which never take part in merges). Warns and stops early when no
        pair is left to merge."""
        check_text(text)
        if not isinstance(vocab_size, int):
            raise TokenizerError(f"vocab_size must be an integer, got {vocab_size!r}")
        specials = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise TokenizerError(f"vocab_size={vocab_size} is too small: it must hold the 256 bytes "
                                 f"and {len(specials)} special tokens, so at least {256 + len(specials)}")
        _, split = chunker(pattern)
        parts = special_regex(frozenset(specials)).split(text) if specials else [text]
        chunks = Counter()
        for part in parts:
            chunks.update(split(part))
        words = [list(chunk.encode("utf-8")) for chunk in chunks]
        pairs = train_merges(words, list(chunks.values()), n_merges)
        if len(pairs) < n_merges:
            warnings.warn(f"BPE training stopped early: no pair of tokens is left to merge after "
                          f"{len(pairs)} merges, so vocab_size is {256 + len(pairs) + len(specials)}, "
                          f"not {vocab_size} (the text is too small)", stacklevel=2)
        tokens = [bytes([b]) for b in range(256)]
        for left, right in pairs:
            tokens.append(tokens[left] + tokens[right])
        return cls({t: i for i, t in enumerate(tokens)}, [(tokens[a], tokens[b]) for a, b in pairs],
                   {s: len(tokens) + k for k, s in enumerate(specials)}, pattern)

    @classmethod
    def from_gpt2(cls, vocab_json_path, merges_txt_path, special_tokens=("<|endoftext|>",), pattern="gpt2"):
        """Load GPT-2-format vocab.json + merges.txt; entries named in `special_tokens` are
        special tokens (GPT-2's <|endoftext|> is 50256)."""
        vocab, merges, specials = read_gpt2_files(vocab_json_path, merges_txt_path, special_tokens)
        return cls(vocab, merges, specials, pattern)

    def save_gpt2(self, directory):
        """Write vocab.json + merges.txt (readable by `from_gpt2` and Hugging Face's
        GPT2TokenizerFast). The files cannot record the pattern; readers assume GPT-2's."""
        if self.pattern != PATTERNS["gpt2"]:
            warnings.warn("save_gpt2: this tokenizer's pre-tokenization pattern is not GPT-2's, "
                          "which readers of vocab.json/merges.txt will use instead", stacklevel=2)
        return write_gpt2_files(directory, self.vocab, self.merges, self.special_tokens)

    def _body(self):
        return {"pattern": self.pattern,
                "vocab": {to_symbols(t): i for t, i in sorted(self.vocab.items(), key=lambda e: e[1])},
                "merges": [format_merge(left, right) for left, right in self.merges]}

    @classmethod
    def from_dict(cls, d):
        if not (isinstance(d.get("pattern"), str) and isinstance(d.get("merges"), list)):
            raise TokenizerError("a bpe tokenizer needs a \"pattern\" string and a \"merges\" list")
        merges = [parse_merge(line, f"merge {r}") for r, line in enumerate(d["merges"])]
        return cls(parse_vocab(d.get("vocab"), "vocab"), merges, d.get("special_tokens"), d["pattern"])

    # ---- encoding -------------------------------------------------------------------------

    def _encode_ordinary(self, text):
        """Ids of `text` (no special tokens in it): each distinct chunk is encoded once, into
        the cache, then the chunks' ids are concatenated."""
        chunks, cache = self._chunks(text), self._cache
        missing = set(chunks).difference(cache)
        if len(cache) + len(missing) > CACHE_SIZE:
            cache.clear()
            missing = set(chunks)
        for chunk in missing:
            cache[chunk] = self._encode_chunk(chunk)
        return list(chain.from_iterable(map(cache.__getitem__, chunks)))

    def _encode_chunk(self, chunk):
        """Merge the lowest-ranked adjacent pair, leftmost first, until no pair has a merge.

        Only the two pairs next to a merge change, so their ranks are updated in place.
        A chunk that is itself a token is that token (tiktoken's shortcut): training formed
        the token from its own bytes, by these merges in this order, without help from the
        text around it (no merge crossed the token's edges), so replaying them gives it back."""
        data = chunk.encode("utf-8")
        if data in self.vocab:
            return [self.vocab[data]]
        ids = [self._byte_ids[b] for b in data]
        rank_of, merged, none = self._rank.get, self._merged, len(self._merged)
        ranks = list(map(rank_of, zip(ids, ids[1:]), repeat(none)))  # ranks[i]: pair at i
        while ranks and (rank := min(ranks)) != none:
            i = ranks.index(rank)
            new = merged[rank]
            ids[i:i + 2] = [new]
            del ranks[i]
            if i > 0:
                ranks[i - 1] = rank_of((ids[i - 1], new), none)
            if i < len(ranks):
                ranks[i] = rank_of((new, ids[i + 1]), none)
        return ids
