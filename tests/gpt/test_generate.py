"""Generation: the KV cache against the uncached reference, each option's contract, and
Hugging Face's GPT-2 as the oracle for logits, greedy decoding and every logits processor.

The Hugging Face tests build a random 2-layer GPT2LMHeadModel, convert its weights with
gpt/hf.py and compare; they are skipped when torch or transformers is not installed.
"""
import functools

import numpy as np
import pytest

import nanograd as ng
from gpt import generate as G
from gpt.hf import state_dict_from_hf, state_dict_to_hf
from gpt.model import GPT, GPTConfig

VOCAB = 13
CONFIG = GPTConfig(block_size=8, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16)


@functools.lru_cache(maxsize=None)
def trained_state():
    """Weights of a tiny GPT fitted for a moment to random sequences (an untrained one repeats one token)."""
    ng.manual_seed(0)
    model = GPT(CONFIG)
    data = np.random.default_rng(0).integers(0, VOCAB, (8, CONFIG.block_size + 1))
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.99))
    for _ in range(60):
        _, loss = model(data[:, :-1], data[:, 1:])
        model.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


def tiny_model():
    """A fresh GPT holding the trained weights: greedy continuations vary and depend on the context."""
    model = GPT(CONFIG)
    model.load_state_dict(trained_state())
    return model


def prompt(B=2, T=3, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (B, T))


# ---- the KV cache and the context window ------------------------------------------------
@pytest.mark.parametrize("T", [3, 8, 11])  # a short prompt, a full window, a prompt cropped from the left
def test_cached_generation_equals_uncached(T, device):
    model = tiny_model().astype(np.float64).to(device)  # float64: no near-ties decided by rounding
    idx = prompt(3, T)
    cached = model.generate(idx, 30, temperature=0)  # the window fills and jumps several times
    uncached = model.generate(idx, 30, temperature=0, use_cache=False)
    assert cached.shape == (3, T + 30) and cached.dtype == np.int64
    assert np.array_equal(cached[:, :T], idx)
    assert np.array_equal(cached, uncached)


def test_cached_sampling_equals_uncached():
    model = tiny_model().astype(np.float64)
    a = model.generate(prompt(), 20, temperature=0.9, top_k=5, top_p=0.9, seed=7)
    b = model.generate(prompt(), 20, temperature=0.9, top_k=5, top_p=0.9, seed=7, use_cache=False)
    assert np.array_equal(a, b)


def test_window_rule():
    """Past block_size the window slides: it always holds the newest block_size tokens."""
    model = tiny_model()
    window = G.ContextWindow(model, 1, prompt_length=3, use_cache=False)
    starts = []
    for L in range(3, 20):
        window.next_logits(np.zeros((1, L), dtype=np.int64))
        starts.append(window.start)
    block = model.config.block_size
    assert starts == [max(0, L - block) for L in range(3, 20)]


def test_generation_runs_in_eval_mode_and_restores_it():
    model = tiny_model()
    model.transformer.drop.p = 0.5  # dropout would make two greedy runs differ
    assert np.array_equal(model.generate(prompt(), 10, temperature=0), model.generate(prompt(), 10, temperature=0))
    assert model.training and model.transformer.h[0].training


# ---- options ------------------------------------------------------------------------------
def test_top_k_1_is_greedy():
    model = tiny_model()
    assert np.array_equal(model.generate(prompt(), 20, top_k=1, seed=3), model.generate(prompt(), 20, temperature=0))


def test_no_repeat_ngram_never_repeats_a_bigram():
    model = tiny_model()
    idx = np.array([[1, 2, 3, 1], [4, 4, 5, 6]])
    for row in model.generate(idx, 25, temperature=0, no_repeat_ngram_size=2):
        bigrams = list(zip(row[:-1], row[1:]))
        assert len(set(bigrams)) == len(bigrams)
    plain = model.generate(idx, 25, temperature=0)
    assert any(len(set(zip(r[:-1], r[1:]))) < len(r) - 1 for r in plain)  # the constraint did something


def test_seed_makes_sampling_reproducible():
    model = tiny_model()
    a = model.generate(prompt(), 20, temperature=1.5, seed=1)
    assert np.array_equal(a, model.generate(prompt(), 20, temperature=1.5, seed=1))
    assert not np.array_equal(a, model.generate(prompt(), 20, temperature=1.5, seed=2))
    ng.manual_seed(5)
    b = model.generate(prompt(), 20, temperature=1.5)  # seed=None: nanograd's global generator
    ng.manual_seed(5)
    assert np.array_equal(b, model.generate(prompt(), 20, temperature=1.5))


def test_eos_finishes_rows_and_stops_early():
    model = tiny_model()
    idx = prompt(2, 3)
    free = model.generate(idx, 15, temperature=0)
    eos = int(free[0, 5])  # the third token row 0 generates
    out = model.generate(idx, 15, temperature=0, eos_token_id=eos)
    first = 3 + list(free[0, 3:]).index(eos)
    assert (out[0, first:] == eos).all()  # padded with eos once finished
    assert np.array_equal(out[0, :first], free[0, :first])
    row1 = list(free[1, 3:])
    end = 3 + row1.index(eos) + 1 if eos in row1 else free.shape[1]
    assert out.shape[1] == max(first + 1, end)  # stops once both rows have finished
    assert np.array_equal(out[1, :end], free[1, :end])
    single = model.generate(idx[:1], 15, temperature=0, eos_token_id=eos)
    assert single.shape == (1, first + 1)


def test_stream_gets_each_new_column():
    model = tiny_model()
    columns = []
    out = model.generate(prompt(), 6, temperature=0.8, seed=0, stream=columns.append)
    assert np.array_equal(np.stack(columns, axis=1), out[:, 3:])


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature=-1"), (dict(top_k=0), "top_k=0"), (dict(top_p=1.5), "top_p=1.5"),
    (dict(repetition_penalty=0), "repetition_penalty=0"), (dict(no_repeat_ngram_size=-1), "no_repeat"),
    (dict(eos_token_id=VOCAB), "eos_token_id=13"), (dict(idx=np.zeros((2, 0), int)), "non-empty"),
    (dict(idx=np.array([[1, VOCAB]])), r"\[0, 13\)"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    idx = kwargs.pop("idx", prompt())
    with pytest.raises(ValueError, match=message):
        tiny_model().generate(idx, 5, **kwargs)


# ---- processors on hand-made examples ----------------------------------------------------------
def test_processors_by_hand():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32))
    inf = -np.inf
    np.testing.assert_allclose(G.top_k_filter(logits, 2), [[inf, inf, np.log(0.3), np.log(0.4)]], rtol=1e-6)
    np.testing.assert_allclose(G.top_p_filter(logits, 0.65), [[inf, inf, np.log(0.3), np.log(0.4)]], rtol=1e-6)
    assert np.isfinite(G.top_p_filter(logits, 0.0)).sum() == 1  # always keeps the most likely
    np.testing.assert_allclose(G.penalize_repetition(np.array([[2.0, -2.0, 1.0]]), np.array([[0, 1, 1]]), 2.0),
                               [[1.0, -4.0, 1.0]])
    banned = G.ban_repeated_ngrams(np.zeros((1, 5)), np.array([[1, 2, 3, 1, 2]]), 3)  # 1 2 -> 3 seen
    assert np.array_equal(np.isinf(banned[0]), [False, False, False, True, False])


# ---- Hugging Face as the oracle -------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_pair():
    """A random HF GPT2LMHeadModel and our GPT holding the same weights."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=32, vocab_size=50,
                                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, initializer_range=0.2,
                                     bos_token_id=None, eos_token_id=None, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    model = GPT(GPTConfig(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=16))
    model.load_state_dict(state_dict_from_hf(tensors))
    return torch, hf, model, tensors


def test_hf_weights_round_trip(hf_pair):
    _, _, model, tensors = hf_pair
    back = state_dict_to_hf(model.state_dict())
    assert set(back) == set(tensors) - {"lm_head.weight"}
    assert all(np.array_equal(back[k], tensors[k]) for k in back)
    without_prefix = {k.removeprefix("transformer."): v for k, v in tensors.items()}  # as GPT2Model saves
    without_prefix["h.0.attn.bias"] = np.tril(np.ones((32, 32)))  # an old checkpoint's mask buffer
    assert state_dict_from_hf(without_prefix).keys() == model.state_dict().keys()


@pytest.mark.parametrize("T", [1, 7, 32])
def test_logits_match_hf(hf_pair, T):
    torch, hf, model, _ = hf_pair
    ids = np.random.default_rng(T).integers(0, 50, (3, T))
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(model(ids)[0].numpy(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("options", [dict(no_repeat_ngram_size=2), dict(repetition_penalty=1.3)])
def test_greedy_generation_matches_hf(hf_pair, options):
    torch, hf, model, _ = hf_pair
    ids = np.random.default_rng(1).integers(0, 50, (3, 8))
    t = torch.from_numpy(ids)
    expected = hf.generate(t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=20,
                           **options).numpy()
    assert np.array_equal(model.generate(ids, 20, temperature=0, **options), expected)


def test_processors_match_hf(hf_pair):
    torch = hf_pair[0]
    from transformers.generation import logits_process as lp
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, (4, 12))  # few distinct ids: plenty of repeated n-grams
    logits = (rng.standard_normal((4, 50)) * 3).astype(np.float32)
    cases = [(lp.RepetitionPenaltyLogitsProcessor(1.3), lambda x: G.penalize_repetition(x, ids, 1.3)),
             (lp.RepetitionPenaltyLogitsProcessor(0.7), lambda x: G.penalize_repetition(x, ids, 0.7)),
             (lp.TemperatureLogitsWarper(0.7), lambda x: G.apply_temperature(x, 0.7))]
    cases += [(lp.NoRepeatNGramLogitsProcessor(n), lambda x, n=n: G.ban_repeated_ngrams(x, ids, n)) for n in (1, 2, 3)]
    cases += [(lp.TopKLogitsWarper(k), lambda x, k=k: G.top_k_filter(x, k)) for k in (1, 5, 50)]
    cases += [(lp.TopPLogitsWarper(p), lambda x, p=p: G.top_p_filter(x, p)) for p in (0.0, 0.3, 0.9, 0.999)]
    for theirs, ours in cases:
        expected = theirs(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
        assert np.array_equal(ours(logits), expected), theirs
    chain = lp.LogitsProcessorList([lp.TemperatureLogitsWarper(0.8), lp.TopKLogitsWarper(10), lp.TopPLogitsWarper(0.8)])
    expected = chain(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
    assert np.array_equal(G.top_p_filter(G.top_k_filter(G.apply_temperature(logits, 0.8), 10), 0.8), expected)
