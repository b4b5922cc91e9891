"""Tokenizer interface, both tokenizers: round trips, special tokens, save/load, bad input.

BPE training and GPT-2 files are in test_tokenizer_bpe.py; exactness against the real
GPT-2 tokenizer in test_tokenizer_gpt2.py. Everything here is built from small texts.
"""
import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpt.tokenizer import (BPETokenizer, CharTokenizer, TokenizerError, load_tokenizer,
                           load_tokenizer_json)

EOT = "<|endoftext|>"
SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
          "All:\nSpeak, speak.  I'm sure they'll say it's 1599!\n\tCafé naïve 東京 🙂\n") * 20

# Text that stresses the pre-tokenizer: astral characters, combining marks, whitespace runs.
TRICKY = st.lists(st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u3000", "\xa0", "a", "Z", "'s",
                                  "'", "e\u0301", "\u0308", "9", "12345", "!?", "🙂", "東", "\x00",
                                  "\x1c", "<|", "|>"])).map("".join)
ANY_TEXT = st.one_of(st.text(), TRICKY)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(SAMPLE, 330)


@pytest.fixture(scope="module")
def char():
    return CharTokenizer.train(SAMPLE)


# ---- round trips ----------------------------------------------------------------------------

@given(ANY_TEXT)
def test_bpe_decode_encode_round_trip(bpe, s):
    assert bpe.decode(bpe.encode(s, disallowed_special=())) == s


@given(ANY_TEXT)
def test_char_round_trip_on_own_vocabulary(s):
    tok = CharTokenizer.train(s or "x")
    assert tok.decode(tok.encode(s)) == s


def test_char_vocabulary_is_sorted_characters(char):
    assert char.chars == sorted(set(SAMPLE))
    assert char.vocab_size == len(set(SAMPLE)) and char.eot_token is None
    assert char.encode("\t\n ") == [0, 1, 2]


def test_encode_array_dtype_and_values(bpe):
    arr = bpe.encode_array(SAMPLE)
    assert arr.dtype == np.uint16 and arr.tolist() == bpe.encode(SAMPLE)
    assert bpe.encode_array("").dtype == np.uint16


def test_decode_of_a_broken_character_gives_replacement_char(bpe):
    ids = bpe.encode("🙂")
    assert len(bpe.decode_bytes(ids)) == 4
    partial = [bpe.vocab[bytes([b])] for b in "🙂".encode()[:3]]
    assert bpe.decode(partial) == "\ufffd"
    assert bpe.decode(partial + bpe.encode("ok")) == "\ufffdok"


def test_decode_accepts_numpy_ids(bpe):
    assert bpe.decode(bpe.encode_array("hear me")) == "hear me"


# ---- special tokens -------------------------------------------------------------------------

def test_special_token_is_one_id_when_allowed(bpe):
    ids = bpe.encode(f"speak.{EOT}All", allowed_special="all")
    assert ids.count(bpe.eot_token) == 1 and bpe.eot_token == bpe.vocab_size - 1
    assert ids == bpe.encode("speak.") + [bpe.eot_token] + bpe.encode("All")
    assert bpe.encode(EOT, allowed_special={EOT}) == [bpe.eot_token]
    assert bpe.decode(ids) == f"speak.{EOT}All"


@given(TRICKY, TRICKY)
def test_special_token_never_split_or_merged(bpe, a, b):
    ids = bpe.encode(a + EOT + b, allowed_special="all")
    assert ids == bpe.encode(a, disallowed_special=()) + [bpe.eot_token] + bpe.encode(b, disallowed_special=())


def test_disallowed_special_raises_by_default(bpe):
    with pytest.raises(TokenizerError, match="special token '<\\|endoftext\\|>'.*allowed_special"):
        bpe.encode(f"a{EOT}b")
    with pytest.raises(TokenizerError):
        bpe.encode(f"a{EOT}b", allowed_special="none_raise")


def test_disallowed_special_as_plain_text(bpe):
    ids = bpe.encode(f"a{EOT}b", disallowed_special=())
    assert bpe.eot_token not in ids and bpe.decode(ids) == f"a{EOT}b"


def test_several_specials_longest_first():
    tok = BPETokenizer.train(SAMPLE, 300, special_tokens=("<|a|>", "<|a|>b", EOT))
    assert tok.special_tokens == {"<|a|>": 297, "<|a|>b": 298, EOT: 299}
    assert tok.encode("<|a|>b<|a|>", allowed_special="all") == [298, 297]
    assert tok.encode("x<|a|>", allowed_special={"<|a|>"}, disallowed_special=()) == tok.encode("x") + [297]
    with pytest.raises(TokenizerError, match="unknown special"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_char_tokenizer_has_no_specials(char):
    assert char.encode("speak", allowed_special="all") == char.encode("speak")


# ---- save / load ----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["bpe", "char"])
def test_save_load_same_encodings(bpe, char, tmp_path, which):
    tok = {"bpe": bpe, "char": char}[which]
    tok.save(tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)
    assert loaded.special_tokens == tok.special_tokens
    assert load_tokenizer_json(tok.to_json()).encode(SAMPLE) == tok.encode(SAMPLE)


def test_saved_file_is_readable_and_versioned(bpe):
    d = json.loads(bpe.to_json())
    assert (d["format"], d["version"], d["type"]) == ("nanograd-gpt-tokenizer", 1, "bpe")
    assert d["merges"][0] == "Ġ s" and d["vocab"]["Ġ"] == 32 and d["vocab"]["Ġs"] == 256
    assert d["special_tokens"] == {EOT: 329}


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["bpe", "char"])
def test_lone_surrogate_is_a_clear_error(bpe, char, which):
    tok = {"bpe": bpe, "char": char}[which]
    with pytest.raises(TokenizerError, match="lone surrogate '\\\\ud800' at index 2"):
        tok.encode("ab\ud800")
    with pytest.raises(TokenizerError, match="surrogate"):
        type(tok).train("ab\udfff", *([300] if which == "bpe" else []))


def test_char_unknown_characters_are_named(char):
    with pytest.raises(TokenizerError, match="2 characters are not in the vocabulary: '#@'"):
        char.encode("speak@#")


def test_decode_bad_ids(bpe):
    for ids in ([bpe.vocab_size], [-1], ["a"]):
        with pytest.raises(TokenizerError, match=r"ids must be integers in \[0, 330\)"):
            bpe.decode(ids)


def test_encode_rejects_non_str(bpe):
    with pytest.raises(TokenizerError, match="expected text as str, got bytes"):
        bpe.encode(b"abc")


@pytest.mark.parametrize("mangle, message", [
    (lambda s: s[: len(s) // 2], "not valid JSON, truncated"),
    (lambda s: s.replace('"version": 1', '"version": 7'), "version 7 is not supported"),
    (lambda s: s.replace('"type": "bpe"', '"type": "wordpiece"'), "unknown tokenizer type 'wordpiece'"),
    (lambda s: s.replace('"format": "nanograd-gpt-tokenizer"', '"format": "x"'), "not a nanograd-gpt-tokenizer"),
    (lambda s: re.sub(r'"merges": \[\n  "[^"]*"', '"merges": [\n  "Ġ"', s), "merge 0: expected a merge 'left right'"),
    (lambda s: s.replace('"Ā": 0', '"Ā": 9999'), "vocabulary ids must be 0..328"),
    (lambda s: s.replace('"pattern": "', '"pattern": "(', 1), "not a valid regex"),
    (lambda s: s.replace('"vocab": {', '"vocab": {"\\u0001": 7, ', 1), "'\\\\x01', which is not one of GPT-2's 256"),
])
def test_corrupt_file_is_a_clear_error(bpe, tmp_path, mangle, message):
    text = bpe.to_json()
    mangled = mangle(text)
    assert mangled != text
    (tmp_path / "tok.json").write_text(mangled, encoding="utf-8")
    with pytest.raises(TokenizerError, match=message) as e:
        load_tokenizer(tmp_path / "tok.json")
    assert str(tmp_path / "tok.json") in str(e.value)


def test_truncated_merges_are_detected(bpe):
    d = json.loads(bpe.to_json())
    d["merges"] = d["merges"][:-5]
    with pytest.raises(TokenizerError, match="5 vocabulary tokens are made by no merge.*truncated"):
        load_tokenizer_json(json.dumps(d))


def test_char_file_errors(char):
    d = json.loads(char.to_json())
    d["chars"] = "aa"
    with pytest.raises(TokenizerError, match="distinct single characters"):
        load_tokenizer_json(json.dumps(d))
    with pytest.raises(TokenizerError, match="empty text"):
        CharTokenizer.train("")
