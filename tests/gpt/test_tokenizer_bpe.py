"""BPE training, GPT-2-format files built here, and streaming large texts.

Training is checked against the textbook trainer (recount every pair after every merge);
GPT-2-format files are written by `save_gpt2` or by hand, in GPT-2's own byte order, and
read back by us, by tiktoken and by Hugging Face when those are installed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt.tokenizer import BPETokenizer, TokenizerError, encode_file, token_dtype
from gpt.tokenizer import bpe as bpe_module
from gpt.tokenizer.bpe import PATTERNS, train_merges, train_merges_naive
from gpt.tokenizer.gpt2 import bytes_to_unicode
from gpt.tokenizer.base import encode_pieces, string_blocks, text_pieces

from test_tokenizer import ANY_TEXT, EOT, SAMPLE, TRICKY  # tests/gpt is on sys.path

SMALL_WORDS = st.lists(st.text("abc ", max_size=8), max_size=30)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SAMPLE, 330)


def replay_counts(tok, text):
    """Each merge's pair count at the moment it is applied, replaying training on `text`."""
    words = [list(w.encode()) for w in tok._chunks(text.replace(EOT, ""))]
    counts = []
    for (left, right), new in zip(tok.merges, range(256, tok.vocab_size)):
        pair = (tok.vocab[left], tok.vocab[right])
        counts.append(sum(sum(1 for p in zip(w, w[1:]) if p == pair) for w in words))
        words = [bpe_module.merge(w, pair, new) for w in words]
    return counts


# ---- training -------------------------------------------------------------------------------

def test_training_gives_exactly_vocab_size(bpe):
    assert bpe.vocab_size == 330 and len(bpe.merges) == 330 - 256 - 1
    assert len(bpe.vocab) == 329 and bpe.eot_token == 329


def test_training_matches_the_textbook_trainer(bpe):
    words = [list(w.encode()) for w in bpe._chunks(SAMPLE)]
    naive = train_merges_naive(words, [1] * len(words), 73)
    assert [(bpe.vocab[a], bpe.vocab[b]) for a, b in bpe.merges] == naive


@given(SMALL_WORDS, st.integers(1, 20))
def test_incremental_counts_equal_recounting(words, n):
    ids = [list(w.encode()) for w in words]
    counts = [len(w) % 3 + 1 for w in words]
    assert train_merges([w[:] for w in ids], counts, n) == train_merges_naive(ids, counts, n)


def test_merges_come_out_in_rank_order(bpe):
    counts = replay_counts(bpe, SAMPLE)
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    assert [bpe.vocab[a + b] for a, b in bpe.merges] == list(range(256, 329))


def test_ties_go_to_the_smallest_pair():
    tok = BPETokenizer.train("ab cd", 258)  # chunks "ab", " cd": three pairs, each seen once
    assert tok.merges == [(b" ", b"c")]


def test_training_is_deterministic_across_processes():
    code = ("from gpt.tokenizer import BPETokenizer; from tests.gpt.test_tokenizer import SAMPLE; "
            "print(BPETokenizer.train(SAMPLE, 300).to_json())")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outs = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and BPETokenizer.train(SAMPLE, 300).to_json() + "\n" in outs


def test_training_stops_early_with_a_warning():
    with pytest.warns(UserWarning, match="stopped early: no pair .* after 1 merges, so vocab_size is 258"):
        tok = BPETokenizer.train("ab", 300)
    assert tok.vocab_size == 258 and tok.merges == [(b"a", b"b")]


def test_vocab_size_too_small():
    with pytest.raises(TokenizerError, match="vocab_size=256 is too small.*at least 257"):
        BPETokenizer.train(SAMPLE, 256)
    assert BPETokenizer.train(SAMPLE, 256, special_tokens=()).vocab_size == 256
    with pytest.raises(TokenizerError, match="vocab_size must be an integer"):
        BPETokenizer.train(SAMPLE, 300.0)


def test_special_tokens_take_no_part_in_training():
    with pytest.warns(UserWarning, match="stopped early"):
        tok = BPETokenizer.train(("ab" + EOT) * 50, 270)
    assert tok.merges == [(b"a", b"b")]


def test_cl100k_pattern_splits_digits_in_threes():
    tok = BPETokenizer.train("12345 67890\n" * 50, 262, pattern="cl100k")
    assert tok.pattern == PATTERNS["cl100k"]
    assert all(len(a + b) <= 3 for a, b in tok.merges if (a + b).isdigit())
    assert tok.decode(tok.encode("12345 67890\n")) == "12345 67890\n"


def test_custom_pattern_and_bad_pattern():
    tok = BPETokenizer.train("aaa bbb " * 20, 260, pattern=r"\S+|\s+")
    assert tok.decode(tok.encode("aaa bbb")) == "aaa bbb"
    with pytest.raises(TokenizerError, match="not a valid regex"):
        BPETokenizer.train("a", 300, pattern="(")


# ---- encoding -------------------------------------------------------------------------------

def test_encoding_applies_merges_by_rank(bpe):
    ids = bpe.encode(" speak")
    assert bpe.decode(ids) == " speak" and len(ids) < 3


@given(ANY_TEXT)
def test_cache_eviction_changes_nothing(bpe, s):
    expected = bpe.encode(s, disallowed_special=())
    small = BPETokenizer(bpe.vocab, bpe.merges, bpe.special_tokens)
    old, bpe_module.CACHE_SIZE = bpe_module.CACHE_SIZE, 2
    try:
        assert small.encode(s, disallowed_special=()) == expected
    finally:
        bpe_module.CACHE_SIZE = old


@given(st.text(st.characters(max_codepoint=127)))
def test_ascii_fast_path_matches_unicode_pattern(s):
    import regex
    assert bpe_module.chunker("gpt2")[1](s) == regex.findall(PATTERNS["gpt2"], s)


# ---- GPT-2-format files ---------------------------------------------------------------------

@given(ANY_TEXT)
def test_save_gpt2_round_trip(bpe, tmp_path_factory, s):
    d = tmp_path_factory.mktemp("gpt2")
    back = BPETokenizer.from_gpt2(*bpe.save_gpt2(d))
    assert back.vocab_size == bpe.vocab_size and back.eot_token == bpe.eot_token
    assert back.encode(s, allowed_special="all") == bpe.encode(s, allowed_special="all")
    assert back.decode(back.encode(s, disallowed_special=())) == s


def test_save_gpt2_writes_gpt2s_layout(bpe, tmp_path):
    vocab_path, merges_path = bpe.save_gpt2(tmp_path)
    vocab = json.loads(open(vocab_path, encoding="utf-8").read())
    lines = open(merges_path, encoding="utf-8").read().splitlines()
    assert vocab["Ġs"] == 256 and vocab[EOT] == 329 and vocab["Ċ"] == 10 and len(vocab) == 330
    assert lines[0] == "#version: 0.2" and lines[1] == "Ġ s" and len(lines) == 74


def write_gpt2_files_by_hand(directory):
    """A tiny vocabulary in GPT-2's id order: bytes ranked by GPT-2's symbol table (printable
    first, so b"!" is 0 and b" " is 220), then merges, then <|endoftext|>."""
    table = bytes_to_unicode()
    order = sorted(range(256), key=lambda b: (ord(table[b]) >= 256, ord(table[b])))
    vocab = {table[b]: i for i, b in enumerate(order)}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("e", "r")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab[EOT] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")
    return directory / "vocab.json", directory / "merges.txt"


def test_hand_written_gpt2_files(tmp_path):
    tok = BPETokenizer.from_gpt2(*write_gpt2_files_by_hand(tmp_path))
    assert tok.vocab_size == 263 and tok.eot_token == 262
    assert tok._byte_ids[ord(" ")] == 220 and tok._byte_ids[ord("!")] == 0
    assert tok.encode(" the") == [258]
    assert tok.encode("there    x") == [83, 257, 81, 68, 259, 220, 220, 87]  # "he" before "er"
    assert tok.encode(f"{EOT}!", allowed_special="all") == [262, 0]


@pytest.fixture(scope="module")
def hand_written(tmp_path_factory):
    """Our tokenizer and tiktoken's, from the same hand-written GPT-2 files."""
    tiktoken = pytest.importorskip("tiktoken")
    tok = BPETokenizer.from_gpt2(*write_gpt2_files_by_hand(tmp_path_factory.mktemp("g")))
    enc = tiktoken.Encoding("tiny", pat_str=PATTERNS["gpt2"], mergeable_ranks=tok.vocab, special_tokens={EOT: 262})
    return tok, enc


@given(ANY_TEXT)
def test_hand_written_gpt2_files_match_tiktoken(hand_written, s):
    tok, enc = hand_written
    assert tok.encode(s, allowed_special="all") == enc.encode(s, allowed_special="all")
    assert tok.decode(tok.encode(s, disallowed_special=())) == s


def test_hugging_face_reads_save_gpt2(bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    bpe.save_gpt2(tmp_path)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    for s in [SAMPLE, f"a{EOT}b", "  \n\n\t x", "e\u0301 東京 🙂 'll"]:
        assert hf(s)["input_ids"] == bpe.encode(s, allowed_special="all")


@pytest.mark.parametrize("damage, message", [
    (lambda v, m: (v, "".join(m.splitlines(True)[:4])), "3 vocabulary tokens are made by no merge.*truncated"),
    (lambda v, m: (v[: len(v) // 2], m), "vocab.json: not valid JSON, truncated"),
    (lambda v, m: (v, m + "a b c\n"), "merges.txt, line 8: expected a merge 'left right'"),
    (lambda v, m: (v, m + "Ġthe r\n"), "'Ġther' is not in the vocabulary"),
    (lambda v, m: (v.replace('"!": 0, ', ""), m), r"vocabulary ids must be 0..260"),
])
def test_damaged_gpt2_files(tmp_path, damage, message):
    vocab_path, merges_path = write_gpt2_files_by_hand(tmp_path)
    v, m = damage(vocab_path.read_text(encoding="utf-8"), merges_path.read_text(encoding="utf-8"))
    vocab_path.write_text(v, encoding="utf-8")
    merges_path.write_text(m, encoding="utf-8")
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer.from_gpt2(vocab_path, merges_path)


def test_unnamed_special_token_in_gpt2_files(tmp_path):
    paths = write_gpt2_files_by_hand(tmp_path)
    with pytest.raises(TokenizerError, match="'<\\|endoftext\\|>' .*missing from special_tokens"):
        BPETokenizer.from_gpt2(*paths, special_tokens=())


def test_save_gpt2_warns_about_other_patterns(tmp_path):
    tok = BPETokenizer.train("12345 " * 20, 260, pattern="cl100k")
    with pytest.warns(UserWarning, match="not GPT-2's"):
        tok.save_gpt2(tmp_path)


# ---- large texts ----------------------------------------------------------------------------

@given(st.lists(st.one_of(TRICKY, st.sampled_from(["x\ny", "\n", "a\n\nb", EOT])), max_size=30).map("".join),
       st.integers(1, 9))
def test_pieces_encode_like_the_whole(bpe, s, block):
    pieces = list(text_pieces(string_blocks(s, block)))
    assert "".join(pieces) == s
    ids = np.concatenate([np.zeros(0, np.uint16), *encode_pieces(bpe, pieces, "all")])
    assert ids.tolist() == bpe.encode(s, allowed_special="all")


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
def test_cuts_are_exact_for_both_patterns(pattern):
    tok = BPETokenizer.train(SAMPLE, 300, pattern=pattern)
    text = "a \n\nb\n c.\n\nd\r\ne\n\tf  \ng\nh1\n2!\n" * 3
    pieces = list(text_pieces(string_blocks(text, 2)))
    assert len(pieces) == 9
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


def test_encode_file(bpe, tmp_path):
    (tmp_path / "in.txt").write_text(SAMPLE * 3 + EOT + "\r\nend", encoding="utf-8", newline="")
    n = encode_file(bpe, tmp_path / "in.txt", tmp_path / "out.bin", allowed_special="all", piece_chars=100)
    ids = np.fromfile(tmp_path / "out.bin", dtype=np.uint16)
    assert n == len(ids) and ids.tolist() == bpe.encode(SAMPLE * 3 + EOT + "\r\nend", allowed_special="all")
    assert not os.path.exists(tmp_path / "out.bin.tmp")


def test_encode_file_errors(bpe, tmp_path):
    (tmp_path / "in.txt").write_text(f"a{EOT}", encoding="utf-8")
    with pytest.raises(TokenizerError, match="special token"):
        encode_file(bpe, tmp_path / "in.txt", tmp_path / "out.bin")
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(TokenizerError, match="bad.txt: not UTF-8"):
        encode_file(bpe, tmp_path / "bad.txt", tmp_path / "out.bin")
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "in.txt"]


def test_token_dtype():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
