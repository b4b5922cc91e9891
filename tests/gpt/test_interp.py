"""Hook points, the activation cache and the analyses built on them (gpt/interp.py).

The centrepiece is a two-layer model whose weights are written by hand: a previous-token
head in layer 0 and an induction head in layer 1 that reads it. The analyses must find
that circuit (high induction score, loss drop on the repeat, ablation hurts that head).
"""
import functools
import json
import os
import sys

import numpy as np
import pytest

import nanograd as ng
from gpt import hf, inspect, interp
from gpt.checkpoint import save_checkpoint
from gpt.data import prepare
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import BPETokenizer, CharTokenizer
from nanograd.attention import attention_pattern

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import train  # noqa: E402

from tiny import random_ids, tiny_model  # noqa: E402


def all_heads_zero(n_head):
    """One hook zeroing every head of a layer's head_out, by composing single-head hooks."""
    return lambda x: functools.reduce(lambda a, h: interp.ablate_head_hook(h)(a), range(n_head), x)


# ---- hooks and cache -----------------------------------------------------------------
def test_cache_holds_every_activation_and_leaves_the_logits_identical():
    model = tiny_model()
    idx = random_ids(2, 7)
    logits, cache = model.run_with_cache(idx)
    assert np.array_equal(logits.data, model(idx)[0].data)  # bit for bit
    assert list(cache) == model.hook_names()
    B, T, C, H = 2, 7, 8, 2
    assert cache["embed"].shape == cache["blocks.1.resid_post"].shape == cache["ln_f"].shape == (B, T, C)
    assert cache["blocks.0.attn.head_out"].shape == (B, H, T, C // H)
    assert cache["blocks.0.mlp.pre"].shape == cache["blocks.0.mlp.post"].shape == (B, T, 4 * C)
    pattern = cache["blocks.1.attn.pattern"]
    assert pattern.shape == (B, H, T, T)
    np.testing.assert_allclose(pattern.sum(-1), 1, rtol=1e-6)
    assert np.all(np.triu(pattern, k=1) == 0)  # causal
    np.testing.assert_array_equal(cache["blocks.0.resid_post"], cache["blocks.1.resid_pre"])
    np.testing.assert_allclose(cache["blocks.0.resid_mid"],
                               cache["blocks.0.resid_pre"] + cache["blocks.0.attn_out"], rtol=1e-6)


def test_cached_pattern_is_the_fused_ops_pattern():
    model = tiny_model()
    idx = random_ids(1, 6)
    _, cache = model.run_with_cache(idx, ["blocks.0.ln_1", "blocks.0.attn.pattern"])
    qkv = model.transformer.h[0].attn.c_attn(ng.Tensor(cache["blocks.0.ln_1"])).data
    q, k, _ = qkv.reshape(1, 6, 3, 2, 4).transpose(2, 0, 3, 1, 4)
    np.testing.assert_array_equal(cache["blocks.0.attn.pattern"], attention_pattern(q, k))


def test_identity_hooks_change_nothing_not_even_gradients():
    idx, targets = random_ids(2, 7), random_ids(2, 7, seed=1)
    plain, hooked = tiny_model(), tiny_model()
    _, loss = plain(idx, targets)
    loss.backward()
    hooks = {name: (lambda x: x) if i % 2 else (lambda x: None) for i, name in enumerate(hooked.hook_names())}
    _, hooked_loss = hooked.run_with_hooks(idx, hooks, targets)
    hooked_loss.backward()
    np.testing.assert_allclose(hooked_loss.item(), loss.item(), rtol=1e-6)  # the unfused pattern path
    for (name, p), q in zip(plain.named_parameters(), hooked.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_replacements_flow_forward_and_backward():
    model = tiny_model()
    idx, targets = random_ids(2, 5), random_ids(2, 5, seed=1)
    base = model(idx)[0].data
    doubled, loss = model.run_with_hooks(idx, {"blocks.1.mlp.post": lambda x: x * 2.0}, targets)
    assert not np.allclose(doubled.data, base)
    loss.backward()
    assert np.abs(model.transformer.h[1].mlp.c_fc.weight.grad).sum() > 0
    zeros = model.run_with_hooks(idx, {"blocks.0.attn_out": lambda x: np.zeros(x.shape)})[0]
    assert zeros.dtype == np.float32 and not np.allclose(zeros.data, base)
    assert model.hook_points.fns is None  # hooks are gone after the run
    assert np.array_equal(model(idx)[0].data, base)


def test_zero_ablating_every_head_removes_the_attention_sublayer():
    model = tiny_model(bias=False)
    idx = random_ids(2, 6)
    ablated = model.run_with_hooks(idx, {"blocks.1.attn.head_out": all_heads_zero(2)})[0].data
    removed = model.run_with_hooks(idx, {"blocks.1.attn_out": lambda x: np.zeros(x.shape)})[0].data
    np.testing.assert_array_equal(ablated, removed)
    with_bias = tiny_model()  # with biases, what stays is c_proj's bias alone
    bias = with_bias.transformer.h[1].attn.c_proj.bias.data
    ablated = with_bias.run_with_hooks(idx, {"blocks.1.attn.head_out": all_heads_zero(2)})[0].data
    only_bias = with_bias.run_with_hooks(idx, {"blocks.1.attn_out": lambda x: np.broadcast_to(bias, x.shape)})[0]
    np.testing.assert_allclose(ablated, only_bias.data, rtol=1e-6, atol=1e-7)


def test_bad_hooks_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="no hook point named 'blocks.5.attn.pattern'"):
        model.run_with_hooks(random_ids(1, 4), {"blocks.5.attn.pattern": lambda x: x})
    with pytest.raises(ValueError, match="returned shape"):
        model.run_with_hooks(random_ids(1, 4), {"embed": lambda x: np.zeros((1, 4, 3))})
    assert model.hook_points.fns is None


# ---- a planted induction circuit -----------------------------------------------------
def induction_model(V=48, T=16, beta=4.0, gamma=4.0):
    """Two layers, hand-written: head 0.0 copies the previous token, head 1.0 is an induction head.

    Residual layout: [token code (V) | position code (T) | previous-token code (V)], each code a
    centred one-hot, so LayerNorm only rescales. MLPs are zero. Head 0.0 matches query
    position t with key position t - 1 and writes that token into the previous-token slot;
    head 1.0 matches its token with the previous-token slot of earlier positions and adds the
    token found there (the one that followed last time) to the token slot, scaled by gamma.
    """
    C = 2 * V + T
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=2, n_head=2, n_embd=C))
    for name, p in model.named_parameters():
        p.data = np.ones_like(p.data) if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) \
            else np.zeros_like(p.data)
    tok, pos, prev = np.arange(V), V + np.arange(T), V + T + np.arange(V)
    t = model.transformer
    t.wte.weight.data[:, tok] = np.eye(V) - 1 / V
    t.wpe.weight.data[:, pos] = np.eye(T) - 1 / T
    w0, w1 = t.h[0].attn.c_attn.weight.data, t.h[1].attn.c_attn.weight.data  # (3C, C): q, k, v rows
    w0[np.arange(T), pos] = beta                 # q: my position
    w0[C + np.arange(1, T), pos[:-1]] = 1        # k: position s answers to query s + 1
    w0[2 * C + tok, tok] = 1                     # v: the token
    t.h[0].attn.c_proj.weight.data[prev, tok] = 1
    w1[tok, tok] = beta                          # q: my token
    w1[C + tok, prev] = 1                        # k: the token before position s
    w1[2 * C + tok, tok] = 1                     # v: the token at s
    t.h[1].attn.c_proj.weight.data[tok, tok] = gamma
    return model.eval()


def test_planted_induction_head_is_found():
    model = induction_model()
    scores, first, second = interp.induction_run(model, repeat_len=8, batch_size=16)
    assert scores.shape == (2, 2)
    assert scores[1, 0] > 0.8 and np.delete(scores.ravel(), 2).max() < 0.3
    assert first > np.log(48) - 0.5 and first - second > 1.0  # the repeat becomes predictable
    metrics = interp.emergence_metrics(model, repeat_len=8)
    assert metrics["induction_score"] == pytest.approx(metrics["induction_scores"][1][0], abs=1e-4)
    assert metrics["icl_loss_drop"] > 1.0


def test_ablation_finds_both_heads_of_the_circuit_and_nothing_else():
    model = induction_model()
    rng = np.random.default_rng(0)
    batches = [(ids[:, :-1], ids[:, 1:]) for ids in (interp.repeated_random_tokens(48, 8, 8, rng) for _ in range(2))]
    for mode in ("zero", "mean"):
        base, delta = interp.head_ablation(model, batches, mode)
        assert delta.shape == (2, 2) and delta[0, 0] > 0.5 and delta[1, 0] > 0.5  # heads 0.0 and 1.0
        np.testing.assert_allclose(delta[:, 1], 0, atol=1e-5)  # the idle heads write nothing


def test_planted_circuit_is_found_ablated_and_composed():
    circuit = interp.find_circuit(induction_model(), repeat_len=8, batch_size=16)
    assert circuit["previous_token_heads"] == [[0, 0]] and circuit["induction_heads"] == [[1, 0]]
    assert circuit["other_heads"] == [[0, 1], [1, 1]]
    assert circuit["previous_token_scores"][0][0] > 0.95 and circuit["induction_scores"][1][0] > 0.8
    lost = circuit["ablation"]
    assert lost["induction_heads"] > 0.9 and lost["previous_token_heads"] > 0.5  # mean ablation
    assert abs(lost["other_heads"]) < 1e-4  # the idle heads write nothing
    kc = np.array(circuit["k_composition"])  # (layer-1 head, layer-0 head)
    assert kc[0, 0] > 0.1 and kc[0, 1] == kc[1, 0] == kc[1, 1] == 0  # idle heads: zero matrices
    assert circuit["k_composition_partners"] == [[[1, 0], [0, 0]]]
    assert all(circuit["shifted_induction_scores"][k][1][0] < 0.1 for k in ("-1", "1", "2", "3"))  # right on target


def test_stream_norms_measure_each_piece_of_the_residual_stream():
    model, V, T = induction_model(), 48, 16
    ids = interp.repeated_random_tokens(V, 8, 4, np.random.default_rng(0))
    norms = interp.stream_norms(model, ids)
    assert list(norms) == ["token", "position", "blocks.0.attn_out", "blocks.0.mlp_out",
                           "blocks.1.attn_out", "blocks.1.mlp_out"]
    assert norms["token"] == pytest.approx(np.sqrt(1 - 1 / V)) and norms["position"] == pytest.approx(np.sqrt(1 - 1 / T))
    assert norms["blocks.0.mlp_out"] == norms["blocks.1.mlp_out"] == 0  # the MLPs are zero
    assert norms["blocks.0.attn_out"] > 1 and norms["blocks.1.attn_out"] > 1  # LayerNorm scales the codes up
    model.transformer.h[0].attn.c_proj.weight.data *= 3
    assert interp.stream_norms(model, ids)["blocks.0.attn_out"] == pytest.approx(3 * norms["blocks.0.attn_out"], rel=1e-5)
    assert list(interp.stream_norms(tiny_model(attn_only=True), random_ids(2, 5))) == [
        "token", "position", "blocks.0.attn_out", "blocks.1.attn_out"]
    assert "stream_norms" in interp.find_circuit(induction_model(), repeat_len=8)


def test_k_composition_reads_only_what_the_keys_see():
    model = induction_model()
    c = model.config.n_embd
    model.transformer.h[1].attn.c_attn.weight.data[c:2 * c] = 0  # layer 1's keys read nothing
    assert np.all(interp.k_composition(model) == 0)
    model = induction_model()
    model.transformer.h[0].attn.c_attn.weight.data[2 * c:] *= 7  # the score is scale-free
    np.testing.assert_allclose(interp.k_composition(model), interp.k_composition(induction_model()), rtol=1e-6)


def test_previous_token_scores_on_hand_made_patterns():
    T = 6
    shifted = np.eye(T, k=-1)
    shifted[0, 0] = 1  # the first position can only attend to itself
    patterns = [np.stack([shifted, np.eye(T)])[None]]  # (1, 2 heads, T, T)
    np.testing.assert_allclose(interp.previous_token_scores_from_patterns(patterns), [[1.0, 0.0]])


def test_circuit_needs_two_layers():
    with pytest.raises(ValueError, match="this model has 1 layer: an induction circuit needs two"):
        interp.find_circuit(tiny_model(n_layer=1), repeat_len=3)


# ---- logit lens and text views -------------------------------------------------------
def test_logit_lens_last_stage_is_the_models_prediction():
    model = tiny_model()
    ids = random_ids(1, 6)[0]
    rows = interp.logit_lens(model, ids, k=3)
    assert [r[0] for r in rows] == ["embed", "blocks.0.resid_post", "blocks.1.resid_post"]
    logits = model(ids[None])[0].data[0]
    name, top, probs = rows[-1]
    assert top.shape == probs.shape == (6, 3)
    np.testing.assert_array_equal(top[:, 0], logits.argmax(-1))
    assert np.all(np.diff(probs, axis=-1) <= 0)


def test_text_views():
    text = interp.heatmap_text([np.eye(3), np.zeros((3, 3))], ["a", "bb", "c"], list("xyz"), ["h0", "h1"])
    lines = text.splitlines()
    assert len(lines) == 5 and lines[2] == " a @      " and lines[1].endswith("xyz xyz")
    assert interp.table_text(["a", "bbb"], [[1, 2]]) == "a  bbb\n1  2"
    assert interp.shade(0.5, 1.0) == interp.SHADES[5] and interp.shade(2, 1.0) == "@"


# ---- the command line ----------------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path):
    """A run directory as train.py leaves it: a tiny char model's checkpoint, token files, metrics."""
    text = "to be, or not to be, that is the question. " * 40
    tokenizer = CharTokenizer.train(text)
    prepare(text, tokenizer, str(tmp_path))
    model = tiny_model(vocab_size=tokenizer.vocab_size, block_size=16)
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), model, tokenizer)
    (tmp_path / "metrics.jsonl").write_text(
        '{"iter": 0, "train_loss": 3.0, "val_loss": 3.1, "induction_score": 0.02, "icl_loss_drop": 0.0}\n'
        '{"iter": 10, "loss": 2.5, "lr": 0.001}\n'
        '{"iter": 20, "train_loss": 2.0, "val_loss": 2.2, "induction_score": 0.4, "icl_loss_drop": 1.5}\n')
    return str(tmp_path)


def test_inspect_commands_print_their_views(run_dir, capsys):
    out = f"--out_dir={run_dir}"
    inspect.main(["attention", out, "--prompt=to be, or not"])
    assert "layer 1:" in capsys.readouterr().out
    inspect.main(["logit-lens", out, "--prompt=to be", "--top_k=2", "--positions=1"])
    assert "position 4: 'e'" in capsys.readouterr().out
    inspect.main(["ablate", out, "--batches=1", "--batch_size=2"])
    assert "increase when one head is zero-ablated" in capsys.readouterr().out
    inspect.main(["induction", out, "--batch_size=2"])
    assert "in-context loss drop" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown command 'atention'"):
        inspect.main(["atention", out])
    with pytest.raises(ValueError, match="--layer=5"):
        inspect.main(["attention", out, "--layer=5"])


def test_inspect_circuit_writes_circuit_json(tmp_path, capsys):
    model = induction_model()
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), model, CharTokenizer.train("abcdefghijklmnopqrstuvwxyz" * 2))
    inspect.main(["circuit", f"--out_dir={tmp_path}", "--repeat_len=8", "--batch_size=16"])
    out = capsys.readouterr().out
    assert "induction head 1.0 reads most from head 0.0 (previous-token)" in out
    found = json.loads((tmp_path / "circuit.json").read_text())
    assert found["induction_heads"] == [[1, 0]] and found["ablation_mode"] == "mean"
    save_checkpoint(str(tmp_path / "ckpt.safetensors"), tiny_model(n_layer=1), CharTokenizer.train("abcdefghijk"))
    with pytest.raises(ValueError, match="needs two"):
        inspect.main(["circuit", f"--out_dir={tmp_path}"])


def test_inspect_pngs(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    inspect.main(["plot-metrics", f"--out_dir={run_dir}"])
    inspect.main(["induction", f"--out_dir={run_dir}", "--batch_size=2", f"--image={tmp_path / 'ind.png'}"])
    assert (tmp_path / "emergence.png").stat().st_size > 0 and (tmp_path / "ind.png").stat().st_size > 0
    (tmp_path / "emergence.json").write_text('{"phase_change_iter": 20}')  # the marker of an induction run
    inspect.main(["plot-metrics", f"--out_dir={run_dir}", f"--image={tmp_path / 'marked.png'}"])
    inspect.main(["circuit", f"--out_dir={run_dir}", "--batch_size=2", f"--image={tmp_path / 'circuit.png'}"])
    assert (tmp_path / "marked.png").stat().st_size > 0 and (tmp_path / "circuit.png").stat().st_size > 0


def test_track_emergence_logs_scores_and_leaves_training_unchanged(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("to be, or not to be, that is the question. " * 60, encoding="utf-8")
    common = [f"--data_file={text}", "--n_layer=2", "--n_head=2", "--n_embd=16", "--block_size=16",
              "--batch_size=4", "--eval_iters=2", "--eval_interval=3", "--log_interval=1", "--max_iters=6",
              "--dropout=0.1"]
    rows = {}
    for track in ("false", "true"):
        out = tmp_path / track
        train.main(common + [f"--out_dir={out}", f"--track_emergence={track}"])
        rows[track] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows["true"] if "val_loss" in r]
    assert len(evals) == 3 and all(0 <= r["induction_score"] <= 1 and len(r["induction_scores"]) == 2 for r in evals)
    losses = lambda rs: [r.get("loss", r.get("val_loss")) for r in rs]
    assert losses(rows["true"]) == losses(rows["false"])


def test_inspect_reads_a_gpt2_directory(tmp_path, capsys):
    text = "".join(f"The quick brown fox {i} jumps over the lazy dog. " for i in range(30))
    tokenizer = BPETokenizer.train(text, 300)
    hf.save(tiny_model(vocab_size=tokenizer.vocab_size, block_size=16), tokenizer, str(tmp_path / "gpt2"))
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    source = f"--init_from={tmp_path / 'gpt2'}"
    inspect.main(["logit-lens", source, "--prompt=The quick brown", "--positions=1"])
    inspect.main(["ablate", source, f"--data_file={tmp_path / 'text.txt'}", "--batches=1", "--batch_size=2"])
    out = capsys.readouterr().out
    assert "blocks.1.resid_post" in out and "head 1" in out
