"""Segments: several sequences packed in one row behave as separate rows.

A row holding A then B, with segment ids, must give the logits of A alone and of B alone
(fast path, hooked path, KV cache), and in float64 the same loss and gradients as one
sequence per row with padding. The fused op with segments is checked against the hooked
pattern past its causal tiles. generate's attention_mask (left padding as a segment) must
decode every prompt of a batch as it decodes alone; resize_token_embeddings grows the
vocabulary. Tiny models only, so the file takes seconds.
"""
import numpy as np
import pytest

import nanograd as ng
from gpt.chat.reply import left_pad
from gpt.model import attention_pattern
from nanograd import attention, backend
from nanograd import functional as F

from tiny import random_ids, tiny_model  # noqa: E402

A, B = random_ids(1, 3, seed=1)[0], random_ids(1, 5, seed=2)[0]  # two sequences; block_size is 8
PACKED = np.concatenate([A, B])[None]  # (1, 8)
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1, 1, 1]])  # A is segment 0, B segment 1


def logits_of(model, idx, **kwargs):
    return model(idx, **kwargs)[0].numpy()


def test_packed_row_gives_the_logits_of_each_sequence_alone(device):
    model = tiny_model().to(device)
    packed = logits_of(model, PACKED, segments=SEGMENTS)  # (1, 8, V)
    np.testing.assert_allclose(packed[:, :3], logits_of(model, A[None]), atol=1e-6)
    np.testing.assert_allclose(packed[:, 3:], logits_of(model, B[None]), atol=1e-6)
    assert not np.allclose(packed, logits_of(model, PACKED), atol=1e-3)  # without segments B would see A


def test_segment_ids_need_not_be_contiguous_runs():
    """Position and mask both follow the id, so A interleaved with B is still A alone."""
    model = tiny_model()
    order = np.array([0, 3, 4, 1, 5, 6, 2, 7])  # A's tokens at 0, 3, 6
    packed = logits_of(model, PACKED[:, order], segments=SEGMENTS[:, order])
    np.testing.assert_allclose(packed[:, [0, 3, 6]], logits_of(model, A[None]), atol=1e-6)


def test_hooked_path_sees_the_masked_pattern(device):
    model = tiny_model().to(device)
    logits, cache = model.run_with_cache(PACKED, segments=SEGMENTS)
    np.testing.assert_allclose(logits.numpy(), logits_of(model, PACKED, segments=SEGMENTS), atol=1e-6)
    pattern = backend.to_device(cache["blocks.1.attn.pattern"], "cpu")  # (1, H, 8, 8)
    assert not pattern[:, :, 3:, :3].any() and not pattern[:, :, :3, 3:].any()  # nothing across A | B
    np.testing.assert_allclose(pattern.sum(-1), 1, atol=1e-6)
    _, alone = model.run_with_cache(B[None], names=["blocks.1.attn.pattern"])
    np.testing.assert_allclose(pattern[:, :, 3:, 3:], backend.to_device(alone["blocks.1.attn.pattern"], "cpu"),
                               atol=1e-6)


def test_kv_cache_with_segments_matches_the_full_pass(device):
    model = tiny_model().to(device)
    full = logits_of(model, PACKED, segments=SEGMENTS)
    cache = model.new_cache(1)
    with ng.no_grad():
        steps = [logits_of(model, PACKED[:, t:t + 1], cache=cache, segments=SEGMENTS[:, t:t + 1]) for t in range(8)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-6)


def test_kv_cache_refuses_to_mix_calls_with_and_without_segments():
    model = tiny_model()
    cache = model.new_cache(1)
    with ng.no_grad():
        model(PACKED[:, :2], cache=cache, segments=SEGMENTS[:, :2])
        with pytest.raises(ValueError, match="give segments at every call or at none"):
            model(PACKED[:, 2:3], cache=cache)


def test_bad_segments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"segments must be integer ids of the shape of idx \(1, 8\)"):
        tiny_model()(PACKED, segments=SEGMENTS[:, :5])


def loss_and_grads(model, idx, targets, segments=None):
    model.zero_grad()
    _, loss = model(idx, targets, segments=segments)
    loss.backward()
    return loss.item(), {name: p.grad.copy() for name, p in model.named_parameters()}


def test_packed_loss_and_gradients_equal_one_sequence_per_row_float64():
    model = tiny_model().astype(np.float64)
    targets = random_ids(1, 8, seed=3)  # a target for every token of A and B
    packed_loss, packed_grads = loss_and_grads(model, PACKED, targets, SEGMENTS)
    rows = np.zeros((2, 8), dtype=np.int64)  # A then padding, B then padding
    rows[0, :3], rows[1, :5] = A, B
    row_targets = np.full((2, 8), -1)  # padding is never a target
    row_targets[0, :3], row_targets[1, :5] = targets[0, :3], targets[0, 3:]
    loss, grads = loss_and_grads(model, rows, row_targets)
    assert abs(packed_loss - loss) < 1e-12
    for name, grad in grads.items():
        np.testing.assert_allclose(packed_grads[name], grad, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("tq", [2 * attention.TILE + 5, 3])  # all queries (causal tiles), or a KV cache's last 3
def test_fused_op_with_segments_equals_the_dense_pattern(tq):
    """Forward and backward of the tiled op with segments against softmax(QK^T + masks) V as Tensors."""
    rng = np.random.default_rng(0)
    T = 2 * attention.TILE + 5
    q, k, v = (rng.standard_normal((2, 2, n, 4)) for n in (tq, T, T))
    segments = np.sort(rng.integers(0, 4, (2, T)), axis=1)  # four segments of random lengths per row
    outputs = []
    for fn in (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, segments=segments),
               lambda q, k, v: attention_pattern(q, k, segments) @ v):
        ts = [ng.Tensor(a, requires_grad=True) for a in (q, k, v)]
        out = fn(*ts)
        (out * ng.Tensor(np.cos(np.arange(out.size)).reshape(out.shape))).sum().backward()
        outputs.append([out.numpy(), *(t.grad for t in ts)])
    for fused, dense in zip(*outputs):
        np.testing.assert_allclose(fused, dense, atol=1e-12)


# ---- generate with left-padded prompts ----------------------------------------------------
PROMPTS = [random_ids(1, n, seed=n)[0] for n in (2, 10, 5)]  # the second is longer than block_size (8)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("options", [{}, dict(repetition_penalty=1.5, no_repeat_ngram_size=2),
                                     dict(no_repeat_ngram_size=1), dict(num_beams=3)])
def test_padded_batch_decodes_each_prompt_as_alone(use_cache, options, device):
    """12 new tokens: every row's window slides past block_size, the long prompt's from the start."""
    model = tiny_model().astype(np.float64).to(device)  # float64: no near-ties decided by rounding
    for pad_id in (0, 7):  # what the padding holds never matters
        idx, mask = left_pad(PROMPTS, pad_id)
        out = model.generate(idx, 12, temperature=0, attention_mask=mask, use_cache=use_cache, **options)
        assert out.shape == (3, 10 + 12) and np.array_equal(out[:, :10], idx)
        for row, p in enumerate(PROMPTS):
            alone = model.generate(p[None], 12, temperature=0, use_cache=use_cache, **options)[0]
            np.testing.assert_array_equal(out[row, 10 - len(p):], alone, err_msg=f"row {row}, pad {pad_id}")


def test_padded_batch_finishes_rows_at_eos_as_alone():
    model = tiny_model().astype(np.float64)
    idx, mask = left_pad(PROMPTS, 0)
    alone = [model.generate(p[None], 12, temperature=0)[0] for p in PROMPTS]
    eos = int(alone[0][len(PROMPTS[0]) + 2])  # the third token the first prompt gets
    out = model.generate(idx, 12, temperature=0, attention_mask=mask, eos_token_id=eos)
    for row, (p, full) in enumerate(zip(PROMPTS, alone)):
        new = out[row, 10:]
        ends = np.flatnonzero(full[len(p):] == eos)
        n = ends[0] + 1 if len(ends) else 12  # tokens until (and with) the first eos
        np.testing.assert_array_equal(new[:n], full[len(p):len(p) + n])
        assert (new[n:] == eos).all()


def test_padded_sampling_with_a_seed_is_deterministic():
    model = tiny_model()
    idx, mask = left_pad(PROMPTS, 0)
    runs = [model.generate(idx, 12, temperature=1.0, top_k=5, seed=seed, attention_mask=mask) for seed in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("mask, message", [
    (np.ones((3, 9)), "attention_mask must have the shape of idx"),
    (np.full((3, 10), 2), "must hold only 1 .token. and 0 .padding."),
    (np.tile(np.arange(10) < 5, (3, 1)), "must be left-padded"),  # right-padded
    (np.zeros((3, 10)), "needs at least one token"),
])
def test_bad_attention_masks_are_one_line_errors(mask, message):
    idx, _ = left_pad(PROMPTS, 0)
    with pytest.raises(ValueError, match=message):
        tiny_model().generate(idx, 2, attention_mask=mask)


# ---- growing the vocabulary ----------------------------------------------------------------
@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_resize_token_embeddings_adds_mean_rows(tie_embeddings):
    model = tiny_model(tie_embeddings=tie_embeddings)
    idx = random_ids(2, 5)
    before = logits_of(model, idx)  # (2, 5, 11)
    old = [p.data.copy() for p in (model.transformer.wte.weight, model.unembedding())]
    assert model.resize_token_embeddings(14) is model and model.config.vocab_size == 14
    for p, o in zip((model.transformer.wte.weight, model.unembedding()), old):
        assert p.shape == (14, 8) and p.dtype == np.float32
        np.testing.assert_array_equal(p.data[:11], o)
        np.testing.assert_allclose(p.data[11:], np.repeat(o.mean(axis=0, keepdims=True), 3, axis=0), atol=1e-7)
    assert (model.unembedding() is model.transformer.wte.weight) == tie_embeddings
    after = logits_of(model, idx)  # (2, 5, 14): the old ids' logits unchanged
    np.testing.assert_allclose(after[..., :11], before, atol=1e-6)
    _, loss = model(np.array([[13, 12, 1]]), np.array([[12, 13, 0]]))  # the new ids train
    loss.backward()
    assert np.abs(model.transformer.wte.weight.grad[11:]).sum() > 0


def test_resize_token_embeddings_refuses_to_shrink():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^resize_token_embeddings: 10 is smaller than vocab_size=11; shrinking"):
        model.resize_token_embeddings(10)
    model.resize_token_embeddings(11)  # the same size: nothing changes
    assert model.transformer.wte.weight.shape == (11, 8)
