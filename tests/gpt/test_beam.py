"""Beam search: Hugging Face's beam search as the oracle, the KV cache against the uncached
reference, and the option checks.

The oracle is a random 2-layer GPT2LMHeadModel (skipped without torch and transformers);
its eos token is one that greedy decoding emits early, so hypotheses do finish on eos.
"""
import itertools

import numpy as np
import pytest

from gpt.generate import generate
from gpt.hf import state_dict_from_hf
from gpt.model import GPT, GPTConfig

V = 50
CONFIG = GPTConfig(block_size=32, vocab_size=V, n_layer=2, n_head=2, n_embd=16)
EOS = 21  # a token the greedy continuation of PROMPT reaches after a few steps
PROMPT = np.random.default_rng(1).integers(0, V, (2, 5))


@pytest.fixture(scope="module")
def hf_pair():
    """A random HF GPT2LMHeadModel and our GPT holding the same weights."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead on a busy machine
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=V,
                                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, initializer_range=0.2,
                                     bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.GPT2LMHeadModel(config).eval()
    model = GPT(CONFIG)
    model.load_state_dict(state_dict_from_hf({k: v.detach().numpy() for k, v in hf.state_dict().items()}))
    return torch, hf, model


def hf_beams(torch, hf, max_new_tokens, eos, **options):
    t = torch.from_numpy(PROMPT)
    return hf.generate(t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=max_new_tokens,
                       eos_token_id=eos, pad_token_id=eos, **options).numpy()


# every beams x length penalty x early stopping; returned sequences and n-gram ban alternate
CASES = [dict(num_beams=b, length_penalty=lp, early_stopping=es, num_return_sequences=1 + i % 2,
              no_repeat_ngram_size=2 * (i // 2 % 2))
         for i, (b, lp, es) in enumerate(itertools.product([2, 4], [1.0, 0.0, 2.0, -1.0], [False, True, "never"]))]


@pytest.mark.parametrize("eos", [None, EOS])
def test_beam_search_matches_hf(hf_pair, eos):
    """Each case of CASES, with and without eos."""
    torch, hf, model = hf_pair
    for options in CASES:
        expected = hf_beams(torch, hf, 12, eos, **options)
        ours = generate(model, PROMPT, 12, eos_token_id=eos, **options)
        assert ours.shape == expected.shape and np.array_equal(ours, expected), options


def test_eos_finishes_hypotheses_early(hf_pair):
    """With eos, some returned hypothesis is shorter than the longest and padded with eos, as HF pads."""
    torch, hf, model = hf_pair
    options = dict(num_beams=4, num_return_sequences=4, length_penalty=-1.0)
    out = generate(model, PROMPT, 12, eos_token_id=EOS, **options)
    assert np.array_equal(out, hf_beams(torch, hf, 12, EOS, **options))
    new = out[:, PROMPT.shape[1]:]
    assert any(EOS in row[:-1] for row in new)  # ended before the last position


@pytest.mark.parametrize("T", [3, 30])  # past block_size=32 the window slides and the cache is rebuilt
def test_cached_beams_equal_uncached(T):
    model = GPT(CONFIG).astype(np.float64)
    idx = np.random.default_rng(T).integers(0, V, (2, T))
    cached = generate(model, idx, 8, num_beams=3, num_return_sequences=3)
    assert cached.shape == (6, T + 8)
    assert np.array_equal(cached, generate(model, idx, 8, num_beams=3, num_return_sequences=3, use_cache=False))


@pytest.mark.parametrize("options, message", [
    (dict(num_beams=0), "num_beams=0"),
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences=3"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping='sometimes'"),
    (dict(num_beams=2, stream=print), "cannot stream"),
])
def test_bad_beam_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as e:
        generate(GPT(CONFIG), PROMPT, 4, **options)
    assert "\n" not in str(e.value)
