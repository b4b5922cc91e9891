"""The GPT model: shapes, errors, GPT-2 names and init, optimizer groups, gradients, the KV cache.

The gradient check runs the whole model in float64 against finite differences; the
overfitting test shows the pieces train together. Models are tiny, so the file takes seconds.
"""
import math

import numpy as np
import pytest

import nanograd as ng
from gpt.model import GPTConfig

from tiny import random_ids, tiny_model  # noqa: E402


def test_forward_shapes_and_loss():
    model = tiny_model()
    idx = random_ids(2, 5)
    logits, loss = model(idx)
    assert logits.shape == (2, 5, 11) and logits.dtype == np.float32 and loss is None
    logits, loss = model(ng.Tensor(idx), targets=random_ids(2, 5, seed=1))
    assert loss.shape == () and loss.dtype == np.float32
    assert abs(loss.item() - math.log(11)) < 0.2  # small init: close to uniform predictions


def test_ignored_targets_do_not_count():
    model = tiny_model()
    idx, targets = random_ids(2, 5), random_ids(2, 5, seed=1)
    partial = targets.copy()
    partial[:, 3:] = -1
    _, loss = model(idx, partial)
    _, expected = model(idx[:, :3], targets[:, :3])  # causal: the first 3 positions alone
    assert np.allclose(loss.item(), expected.item(), atol=1e-6)


def test_sequence_longer_than_block_size_is_an_error():
    with pytest.raises(ValueError, match=r"T=9 is longer than block_size=8"):
        tiny_model()(random_ids(1, 9))


def test_config_validation():
    with pytest.raises(ValueError, match=r"^n_embd=100 is not divisible by n_head=3; "):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="n_layer=0"):
        GPTConfig(n_layer=0)


def test_parameter_names_are_gpt2s_and_lm_head_is_tied():
    model = tiny_model(n_layer=1)
    layer = [f"transformer.h.0.{m}.{p}" for m in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc",
                                                  "mlp.c_proj") for p in ("weight", "bias")]
    names = [n for n, _ in model.named_parameters()]
    assert names == ["transformer.wte.weight", "transformer.wpe.weight", *layer,
                     "transformer.ln_f.weight", "transformer.ln_f.bias"]
    params = dict(model.named_parameters())
    assert params["transformer.h.0.attn.c_attn.weight"].shape == (24, 8)  # (out, in)
    assert params["transformer.h.0.mlp.c_fc.weight"].shape == (32, 8)


def test_gpt2_init_is_reproducible():
    model = tiny_model(seed=3, n_embd=64, n_head=4, vocab_size=500, n_layer=4)
    p = dict(model.named_parameters())
    assert all(v.dtype == np.float32 for v in p.values())
    assert abs(p["transformer.wte.weight"].data.std() - 0.02) < 0.002
    assert abs(p["transformer.h.0.mlp.c_proj.weight"].data.std() - 0.02 / math.sqrt(8)) < 0.001
    assert abs(p["transformer.h.0.attn.c_attn.weight"].data.std() - 0.02) < 0.002
    assert not p["transformer.h.1.attn.c_attn.bias"].data.any()
    assert (p["transformer.h.1.ln_2.weight"].data == 1).all() and not p["transformer.ln_f.bias"].data.any()
    again = tiny_model(seed=3, n_embd=64, n_head=4, vocab_size=500, n_layer=4)
    assert all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_num_params():
    C, V, P, L = 8, 11, 8, 2
    per_layer = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    total = V * C + P * C + L * per_layer + 2 * C
    model = tiny_model()
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - P * C
    assert tiny_model(bias=False).num_params() == (V * C + L * (2 * C + 3 * C * C + C * C + 8 * C * C) + C)


def test_configure_optimizers_decays_only_matrices():
    model = tiny_model()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95))
    assert isinstance(opt, ng.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 2 + 4 * 2  # wte, wpe, four matmuls per layer
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert opt.param_groups[0]["lr"] == 3e-4 and opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_gradcheck_whole_model_float64():
    model = tiny_model().astype(np.float64)
    idx, targets = random_ids(2, 5), random_ids(2, 5, seed=1)
    for p in model.parameters():  # larger weights than the init, so no gradient is negligibly small
        p.data = np.random.default_rng(p.size).standard_normal(p.shape) * 0.5
    assert ng.gradcheck(lambda *ps: model(idx, targets)[1], *model.parameters())


def test_overfits_one_batch():
    model = tiny_model(block_size=16, vocab_size=16, n_embd=32, n_head=4)
    data = random_ids(4, 17, vocab=16)
    x, y = data[:, :-1], data[:, 1:]
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.99))
    for _ in range(150):
        _, loss = model(x, y)
        model.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_dropout_is_active_only_in_training():
    model = tiny_model(dropout=0.5)
    idx = random_ids(2, 5)
    assert not np.allclose(model(idx)[0].data, model(idx)[0].data)
    model.eval()
    assert np.array_equal(model(idx)[0].data, model(idx)[0].data)


def test_kv_cache_matches_the_full_forward(device):
    model = tiny_model().astype(np.float64).to(device)
    idx = random_ids(2, 8)
    full = model(idx)[0].numpy()  # (B, T, V)
    with ng.no_grad():
        cache = model.new_cache(2)
        pieces = [model(idx[:, a:b], cache=cache)[0].numpy() for a, b in ((0, 3), (3, 4), (4, 8))]
    assert cache.length == 8
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-10, atol=1e-12)
    with ng.no_grad(), pytest.raises(ValueError, match="T=9 is longer than block_size=8"):
        model(idx[:, :1], cache=cache)


def test_kv_cache_needs_no_grad():
    model = tiny_model()
    with pytest.raises(RuntimeError, match="no_grad"):
        model(random_ids(1, 2), cache=model.new_cache(1))


def test_crop_block_size():
    model = tiny_model()
    idx = random_ids(2, 4)
    before = model(idx)[0].data
    model.crop_block_size(4)
    assert model.config.block_size == 4 and model.transformer.wpe.weight.shape == (4, 8)
    assert np.array_equal(model(idx)[0].data, before)
    with pytest.raises(ValueError, match="T=5 is longer than block_size=4"):
        model(random_ids(2, 5))
    with pytest.raises(ValueError, match="crop_block_size"):
        model.crop_block_size(6)


# ---- attention-only models --------------------------------------------------------------
def test_attn_only_drops_the_mlps_and_everything_else_works(tmp_path):
    from gpt import hf
    from gpt.checkpoint import load_model, parameter_shapes, save_checkpoint
    from gpt.tokenizer import BPETokenizer, CharTokenizer
    model = tiny_model(attn_only=True)
    names = [n for n, _ in model.named_parameters()]
    assert not any(".mlp." in n or ".ln_2." in n for n in names)
    assert list(parameter_shapes(model.config)) == names
    assert not any("mlp" in n or "ln_2" in n for n in model.hook_names())
    idx = random_ids(2, 6)
    logits, cache = model.run_with_cache(idx)
    np.testing.assert_array_equal(cache["blocks.0.resid_post"], cache["blocks.0.resid_mid"])
    with ng.no_grad():  # the KV cache gives the same logits
        kv = model.new_cache(2)
        pieces = [model(idx[:, a:b], cache=kv)[0].numpy() for a, b in ((0, 4), (4, 6))]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), logits.numpy(), rtol=1e-5, atol=1e-6)
    assert model.generate(idx[:, :2], 3, temperature=0.0).shape == (2, 5)
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), model, CharTokenizer.train("abcdefghijk"))
    loaded, _, _ = load_model(str(tmp_path))
    assert loaded.config.attn_only and np.array_equal(loaded(idx)[0].data, logits.data)
    tok = BPETokenizer.train("the quick brown fox " * 20, 260)
    with pytest.raises(hf.HFError, match="attention-only"):
        hf.save(tiny_model(attn_only=True, vocab_size=tok.vocab_size), tok, str(tmp_path / "gpt2"))


@pytest.mark.parametrize("options", [dict(attn_only=True), dict(attn_only=True, tie_embeddings=False)])
def test_attn_only_and_untied_gradcheck_float64(options):
    model = tiny_model(**options).astype(np.float64)
    idx, targets = random_ids(2, 5), random_ids(2, 5, seed=1)
    for p in model.parameters():
        p.data = np.random.default_rng(p.size).standard_normal(p.shape) * 0.5
    assert ng.gradcheck(lambda *ps: model(idx, targets)[1], *model.parameters())


# ---- an output layer of its own, and the embeddings' init scale --------------------------
def test_untied_output_layer_is_its_own_matrix_and_round_trips(tmp_path):
    from gpt.checkpoint import load_model, parameter_shapes, save_checkpoint
    from gpt.tokenizer import CharTokenizer
    model = tiny_model(tie_embeddings=False)
    assert model.unembedding() is model.unembed.weight and model.unembed.weight is not model.transformer.wte.weight
    assert list(parameter_shapes(model.config)) == [n for n, _ in model.named_parameters()]
    idx = random_ids(2, 6)
    with ng.no_grad():
        logits, h = model(idx)[0].numpy(), model.hidden_states(idx).numpy()
    np.testing.assert_allclose(logits, h @ model.unembed.weight.data.T, rtol=1e-5, atol=1e-6)
    model.unembed.weight.data = model.unembed.weight.data * 0  # the logits come from unembed alone
    assert np.all(model(idx)[0].numpy() == 0)
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), model, CharTokenizer.train("abcdefghijk"))
    loaded, _, _ = load_model(str(tmp_path))
    assert not loaded.config.tie_embeddings and np.all(loaded.unembed.weight.data == 0)



def test_embedding_init_std_scales_the_embeddings_only():
    from gpt.model import GPT
    wide = GPT(GPTConfig(vocab_size=512, block_size=256, n_layer=1, n_head=2, n_embd=64, embedding_init_std=1.0))
    for name in ("wte", "wpe"):
        assert abs(getattr(wide.transformer, name).weight.data.std() - 1.0) < 0.02
    assert abs(wide.transformer.h[0].attn.c_attn.weight.data.std() - 0.02) < 0.001
    with pytest.raises(ValueError, match="embedding_init_std=0"):
        GPTConfig(embedding_init_std=0)
