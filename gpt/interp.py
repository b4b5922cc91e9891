"""Looking inside a trained GPT: induction heads, the logit lens, head ablation, text heatmaps.

Everything here is built on the model's hook points (gpt/model.py lists their names):

    scores = induction_scores(model)               # (n_layer, n_head), in [0, 1]
    circuit = find_circuit(model)                  # previous-token and induction heads, ablation, K-composition
    norms = stream_norms(model, ids)               # how large each piece of the residual stream is
    rows = logit_lens(model, ids, k=5)             # top-k next tokens read after each layer
    base, delta = head_ablation(model, batches)    # (n_layer, n_head) change in loss
    emergence_metrics(model)                       # what train.py --track_emergence logs

Induction (Olsson et al., 2022): on L random tokens repeated twice, a token t in the second
repeat occurred before at t - L; an induction head attends from t to the token after that
occurrence, t - L + 1, and copies it, which lets the model predict the rest of the repeat.
Its score is the mean attention weight on that position. The in-context loss drop is the
mean loss on the first repeat (unpredictable: about ln V) minus that on the second.

Logit lens (nostalgebraist, 2020): the residual stream after each block, passed through the
final LayerNorm and the unembedding as if it were the last layer, shows what the model
would predict "so far". Ablation replaces one head's output (attn.head_out[:, h]) by zeros
or by its mean over the data and measures how much the loss rises.

Left out: activation patching between runs and path patching (hooks make them a few lines),
attribution by gradients, sparse autoencoders.
"""

import numpy as np

import nanograd as ng
from nanograd import backend
from nanograd import functional as F

from .generate import inference_mode

SHADES = " .:-=+*#%@"  # light to dark, for text heatmaps
DEFAULT_REPEAT_LEN = 32


# ---- induction ------------------------------------------------------------------------
def repeated_random_tokens(vocab_size, repeat_len, batch_size, rng):
    """ids (B, 2L): L uniformly random tokens, then the same L tokens again."""
    first = rng.integers(0, vocab_size, (batch_size, repeat_len))
    return np.concatenate([first, first], axis=1)


def induction_scores_from_patterns(patterns, repeat_len, shift=0):
    """(n_layer, n_head) mean attention from t to t - L + 1 + shift, over t in the second repeat.

    patterns: one attention pattern per layer, each (B, H, 2L, 2L), on repeated tokens.
    shift=0 is the induction score; other shifts show a head that attends near, not at,
    the token after the earlier occurrence (t - L + 1 + shift must stay in [0, t]).
    """
    t = np.arange(max(repeat_len, repeat_len - 1 - shift), 2 * repeat_len)
    return np.stack([backend.to_device(p[:, :, t, t - repeat_len + 1 + shift], "cpu").mean(axis=(0, 2))
                     for p in patterns])


def repeat_losses(logits, ids, repeat_len):
    """(mean loss on the first repeat, on the second): next-token losses predicting ids[1:L] and ids[L+1:2L].

    logits (B, 2L, V) array, ids (B, 2L). Position L - 1 (predicting the repeat's first
    token, which nothing announces) is in neither.
    """
    logp = F.log_softmax(ng.Tensor(logits)).numpy()  # (B, 2L, V)
    nll = -np.take_along_axis(logp[:, :-1], np.asarray(ids)[:, 1:, None], axis=-1)[..., 0]  # (B, 2L - 1)
    L = repeat_len
    return float(nll[:, :L - 1].mean()), float(nll[:, L:].mean())


def probe_len(model, repeat_len=None):
    """The repeat length L of the probes: repeat_len, or min(32, block_size // 2); ValueError if 2L does not fit."""
    L = repeat_len or min(DEFAULT_REPEAT_LEN, model.config.block_size // 2)
    if not 2 <= L <= model.config.block_size // 2:
        raise ValueError(f"repeat_len={L}: twice it must fit in block_size={model.config.block_size}, "
                         "and it must be at least 2")
    return L


def induction_run(model, repeat_len=None, batch_size=8, seed=0):
    """(scores (n_layer, n_head), first-repeat loss, second-repeat loss) on repeated random tokens.

    repeat_len defaults to min(32, block_size // 2); the tokens come from np.random.default_rng(seed).
    """
    L = probe_len(model, repeat_len)
    ids = repeated_random_tokens(model.config.vocab_size, L, batch_size, np.random.default_rng(seed))
    names = [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layer)]
    with inference_mode(model):
        logits, cache = model.run_with_cache(ids, names)
    first, second = repeat_losses(logits.numpy(), ids, L)
    return induction_scores_from_patterns([cache[n] for n in names], L), first, second


def previous_token_scores_from_patterns(patterns):
    """(n_layer, n_head) mean attention from each position t >= 1 to t - 1.

    patterns: one attention pattern per layer, each (B, H, T, T).
    """
    t = np.arange(1, patterns[0].shape[-1])
    return np.stack([backend.to_device(p[:, :, t, t - 1], "cpu").mean(axis=(0, 2)) for p in patterns])


def previous_token_run(model, repeat_len=None, batch_size=8, seed=0):
    """(n_layer, n_head) previous-token scores on the repeated random tokens of induction_run."""
    L = probe_len(model, repeat_len)
    ids = repeated_random_tokens(model.config.vocab_size, L, batch_size, np.random.default_rng(seed))
    return previous_token_scores_from_patterns(attention_patterns(model, ids))


def attention_patterns(model, ids):
    """Every layer's attention pattern (B, H, T, T) on ids (B, T), in inference mode."""
    names = [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layer)]
    with inference_mode(model):
        _, cache = model.run_with_cache(ids, names)
    return [cache[n] for n in names]


def emergence_metrics(model, seed=0, repeat_len=None, batch_size=8):
    """The numbers train.py --track_emergence logs at each evaluation.

    {"induction_score": best head's score, "induction_scores": per layer, per head (lists),
     "icl_loss_drop": first-repeat loss minus second-repeat loss, "first_repeat_loss": the former}.
    """
    scores, first, second = induction_run(model, repeat_len, batch_size, seed)
    return {"induction_score": float(scores.max()), "induction_scores": np.round(scores, 4).tolist(),
            "icl_loss_drop": first - second, "first_repeat_loss": first}


def stream_norms(model, ids):
    """{piece: mean norm over ids' positions} of each piece the residual stream is a sum of.

    The pieces: "token" (wte[x_t]), "position" (wpe[t]) and every sublayer's output
    ("blocks.{i}.attn_out", and "blocks.{i}.mlp_out" unless attn_only). A head reads
    LayerNorm(the sum so far), so a piece far smaller than the others reaches it faintly:
    why GPT-2's 0.02-scale embeddings leave layer 1 reading layer 0's outputs instead of the
    token itself (docs/emergence/induction.md). ids: integer array (B, T).
    """
    t = model.transformer
    wte, wpe = (backend.to_device(w.weight.data, "cpu") for w in (t.wte, t.wpe))
    norms = {"token": float(np.linalg.norm(wte[ids], axis=-1).mean()),
             "position": float(np.linalg.norm(wpe[:ids.shape[1]], axis=-1).mean())}
    names = [n for n in model.hook_names() if n.endswith(("attn_out", "mlp_out"))]
    with inference_mode(model):
        _, cache = model.run_with_cache(ids, names)
    norms.update({n: float(np.linalg.norm(backend.to_device(cache[n], "cpu"), axis=-1).mean()) for n in names})
    return norms


# ---- the induction circuit ------------------------------------------------------------
MIN_HEAD_SCORE = 0.1  # a head below this is never called a previous-token or induction head
SHIFTS = (-1, 1, 2, 3)  # find_circuit also measures attention this many tokens after the induction target


def classify_heads(scores, min_score=MIN_HEAD_SCORE):
    """[[layer, head], ...] whose score is at least half the best head's and at least min_score.

    scores (n_layer, n_head). Half the best keeps a circuit spread over several heads whole
    and leaves out heads that only lean the same way.
    """
    cut = max(min_score, 0.5 * float(scores.max()))
    return [[int(l), int(h)] for l, h in zip(*np.nonzero(scores >= cut))]


def mean_ablation_hooks(model, heads, ids):
    """{hook name: fn} replacing each (layer, head) in heads by its mean output over the batch ids (B, T).

    The mean is taken per position (B is averaged, T kept): what the head writes on average
    at that position. Take ids apart from the sequences the hooks then run on, or the mean
    keeps 1/B of each one's own output.
    """
    names = sorted({f"blocks.{l}.attn.head_out" for l, _ in heads})
    with inference_mode(model):
        _, cache = model.run_with_cache(ids, names)
    hooks = {}
    for name in names:
        layer = int(name.split(".")[1])
        fills = {h: backend.to_device(cache[name][:, h].mean(axis=0), "cpu") for l, h in heads if l == layer}
        hooks[name] = ablate_heads_hook(fills)
    return hooks


def icl_drop_lost(model, groups, repeat_len=None, batch_size=8, seed=0):
    """({group: fraction of the in-context loss drop lost when its heads are mean-ablated}, base drop).

    groups: {name: [[layer, head], ...]}. The probe is induction_run's repeated random tokens;
    the fraction is 1 - drop_ablated / drop, so 1 means the drop is gone and 0 that nothing
    changed. The means come from a second batch of the same kind. An empty group gets None.
    """
    L = probe_len(model, repeat_len)
    rng = np.random.default_rng(seed)
    ids, reference = (repeated_random_tokens(model.config.vocab_size, L, batch_size, rng) for _ in range(2))
    def drop(hooks):
        with inference_mode(model):
            logits, _ = model.run_with_hooks(ids, hooks)
        first, second = repeat_losses(logits.numpy(), ids, L)
        return first - second
    base = drop({})
    return {name: (1 - drop(mean_ablation_hooks(model, heads, reference)) / base if heads else None)
            for name, heads in groups.items()}, base


def head_matrices(model, layer):
    """(W_QK (H, C, C), W_OV (H, C, C)) of one layer's heads, in the residual stream's basis.

    Row-vector convention: head h's attention score between residual vectors x_q and x_k is
    x_q W_QK[h] x_k^T (before 1/sqrt(D)), and it writes y W_OV[h] for an attended vector y.
    The layer's ln_1 is folded in (its centring and its scale); biases are left out.
    """
    attn, ln = model.transformer.h[layer].attn, model.transformer.h[layer].ln_1
    C, H = model.config.n_embd, model.config.n_head
    D = C // H
    w = backend.to_device(attn.c_attn.weight.data, "cpu").astype(np.float64)  # (3C, C): rows q, k, v
    proj = backend.to_device(attn.c_proj.weight.data, "cpu").astype(np.float64)  # (C, C)
    fold = (np.eye(C) - 1.0 / C) * backend.to_device(ln.weight.data, "cpu").astype(np.float64)  # centre, scale
    def head(block, h):
        return fold @ w[block * C + h * D: block * C + (h + 1) * D].T  # (C, D)
    qk = np.stack([head(0, h) @ head(1, h).T for h in range(H)])  # (H, C, C)
    ov = np.stack([head(2, h) @ proj[:, h * D:(h + 1) * D].T for h in range(H)])  # (H, C, C)
    return qk, ov


def k_composition(model, reader=1, writer=0):
    """(H, H) K-composition scores (Elhage et al., 2021) of layer `reader`'s heads with layer `writer`'s.

    score[i, j] = |W_QK[i] W_OV[j]^T|_F / (|W_QK[i]|_F |W_OV[j]|_F): how much of head i's key
    side reads what head j writes. An induction head's keys read a previous-token head's output.
    0 where a head's matrix is zero.
    """
    qk, _ = head_matrices(model, reader)
    _, ov = head_matrices(model, writer)
    scores = np.zeros((len(qk), len(ov)))
    for i, a in enumerate(qk):
        for j, b in enumerate(ov):
            norm = np.linalg.norm(a) * np.linalg.norm(b)
            scores[i, j] = np.linalg.norm(a @ b.T) / norm if norm > 0 else 0.0
    return scores


def circuit_heads(induction_scores, previous_token_scores):
    """(induction heads, previous-token heads), each [[layer, head], ...], from (n_layer, n_head) scores:
    classify_heads of each, induction heads above the first layer, previous-token heads below the
    last one and not induction heads."""
    ind = [lh for lh in classify_heads(induction_scores) if lh[0] > 0]
    prev = [lh for lh in classify_heads(previous_token_scores) if lh[0] < len(induction_scores) - 1 and lh not in ind]
    return ind, prev


def find_circuit(model, repeat_len=None, batch_size=8, seed=0):
    """The induction circuit of a model with at least two layers, as circuit.json holds it.

    {"previous_token_heads", "induction_heads": [[layer, head], ...] (classify_heads), "other_heads",
     "previous_token_scores", "induction_scores": (n_layer, n_head) lists,
     "ablation": {"induction_heads", "previous_token_heads", "other_heads": fraction of the
                  in-context loss drop lost, mean ablation}, "icl_loss_drop": without ablation,
     "k_composition": (H, H) layer-1 heads x layer-0 heads,
     "k_composition_partners": [[induction head, the layer-0 head its keys read most], ...],
     "shifted_induction_scores": {shift: (n_layer, n_head) attention to t - L + 1 + shift},
     "stream_norms": stream_norms on the probe}.
    Previous-token heads are looked for below the last layer, induction heads above the first.
    """
    if model.config.n_layer < 2:
        raise ValueError(f"this model has {model.config.n_layer} layer: an induction circuit needs two "
                         "(a previous-token head whose output an induction head's keys read)")
    L = probe_len(model, repeat_len)
    ids = repeated_random_tokens(model.config.vocab_size, L, batch_size, np.random.default_rng(seed))
    patterns = attention_patterns(model, ids)
    ind, prev = induction_scores_from_patterns(patterns, L), previous_token_scores_from_patterns(patterns)
    ind_heads, prev_heads = circuit_heads(ind, prev)
    others = [[l, h] for l in range(model.config.n_layer) for h in range(model.config.n_head)
              if [l, h] not in ind_heads + prev_heads]
    ablation, drop = icl_drop_lost(model, {"induction_heads": ind_heads, "previous_token_heads": prev_heads,
                                           "other_heads": others}, L, batch_size, seed)
    shifts = {k: induction_scores_from_patterns(patterns, L, k) for k in SHIFTS}
    kc = k_composition(model)
    partners = [[[l, h], [0, int(np.argmax(kc[h]))]] for l, h in ind_heads if l == 1]
    return {"previous_token_heads": prev_heads, "induction_heads": ind_heads, "other_heads": others,
            "previous_token_scores": np.round(prev, 4).tolist(), "induction_scores": np.round(ind, 4).tolist(),
            "ablation": {k: (None if v is None else round(float(v), 4)) for k, v in ablation.items()},
            "ablation_mode": "mean", "icl_loss_drop": round(drop, 4),
            "k_composition": np.round(kc, 4).tolist(), "k_composition_partners": partners,
            "shifted_induction_scores": {str(k): np.round(v, 4).tolist() for k, v in shifts.items()},
            "stream_norms": {k: round(v, 4) for k, v in stream_norms(model, ids).items()},
            "repeat_len": L, "batch_size": batch_size, "seed": seed}


# ---- logit lens -----------------------------------------------------------------------
def logit_lens(model, ids, k=5):
    """[(stage name, top-k ids (T, k), their probabilities (T, k))] for one sequence ids (T,).

    The stages are `embed` and each block's `resid_post`, each read through ln_f and the
    unembedding; the last stage's predictions are the model's own.
    """
    names = ["embed"] + [f"blocks.{i}.resid_post" for i in range(model.config.n_layer)]
    with inference_mode(model):
        _, cache = model.run_with_cache(np.asarray(ids)[None], names)
        rows = []
        for name in names:
            logits = model.lm_head(model.transformer.ln_f(ng.Tensor(cache[name][0])))  # (T, V)
            probs = F.softmax(logits).numpy()
            top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]  # (T, k)
            rows.append((name, top, np.take_along_axis(probs, top, axis=-1)))
    return rows


# ---- ablation -------------------------------------------------------------------------
def ablate_head_hook(head, fill=None):
    """A hook for `blocks.{i}.attn.head_out` (B, H, T, D): head `head` becomes zeros, or `fill` (D,) or (T, D).

    Written with Tensor ops (a mask times x, plus the fill), so gradients still flow.
    """
    return ablate_heads_hook({head: fill})


def ablate_heads_hook(fills):
    """ablate_head_hook for several heads of one layer at once: {head: None (zeros) or fill (D,) or (T, D)}."""
    def hook(x):
        xp = backend.get_array_module(x.data)
        keep = xp.ones((1, x.shape[1], 1, 1), dtype=x.dtype)
        added = xp.zeros((1, x.shape[1], x.shape[2], x.shape[3]), dtype=x.dtype)
        for head, fill in fills.items():
            keep[0, head] = 0
            if fill is not None:
                added[0, head] = xp.asarray(fill)
        return x * keep + added
    return hook


def mean_loss(model, batches, hooks=None):
    """Mean loss over batches [(x, y) arrays] in inference mode, with the given hooks."""
    with inference_mode(model):
        return float(np.mean([model.run_with_hooks(x, hooks or {}, y)[1].item() for x, y in batches]))


def mean_head_outputs(model, batches):
    """(n_layer, n_head, D): each head's output averaged over the batches and positions."""
    names = [f"blocks.{i}.attn.head_out" for i in range(model.config.n_layer)]
    sums = 0
    with inference_mode(model):
        for x, _ in batches:
            _, cache = model.run_with_cache(x, names)
            sums = sums + np.stack([backend.to_device(cache[n], "cpu").mean(axis=(0, 2)) for n in names])
    return sums / len(batches)


def head_ablation(model, batches, mode="zero"):
    """(baseline loss, (n_layer, n_head) loss increase when each head alone is ablated).

    mode: 'zero' replaces the head's output by zeros, 'mean' by its mean over the batches.
    Costs n_layer * n_head + 1 passes over the batches (two more for 'mean').
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode={mode!r}: use 'zero' or 'mean'")
    means = mean_head_outputs(model, batches) if mode == "mean" else None
    base = mean_loss(model, batches)
    delta = np.zeros((model.config.n_layer, model.config.n_head))
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            fill = None if means is None else means[layer, head]
            hook = {f"blocks.{layer}.attn.head_out": ablate_head_hook(head, fill)}
            delta[layer, head] = mean_loss(model, batches, hook) - base
    return base, delta


# ---- text views -----------------------------------------------------------------------
def token_label(tokenizer, token_id, width=None):
    """A printable label for one token: its text with newlines and tabs escaped, cut to `width`."""
    text = repr(tokenizer.decode([int(token_id)]))[1:-1]
    return text if width is None else text[:width]


def shade(value, vmax):
    """One character for value in [0, vmax]: blank for 0, '@' for vmax."""
    level = int(len(SHADES) * max(0.0, float(value)) / vmax) if vmax > 0 else 0
    return SHADES[min(level, len(SHADES) - 1)]


def heatmap_text(matrices, row_labels, col_labels, titles, vmax=1.0):
    """Side-by-side text heatmaps of equal-shape matrices (R, C), one character per cell.

    col_labels are single characters written above the columns; rows carry row_labels.
    """
    width = max(len(r) for r in row_labels)
    cols = len(col_labels)
    lines = [" " * width + " " + " ".join(t[:cols].ljust(cols) for t in titles),
             " " * width + " " + " ".join("".join(col_labels) for _ in matrices)]
    for i, label in enumerate(row_labels):
        cells = ["".join(shade(v, vmax) for v in m[i]) for m in matrices]
        lines.append(label.rjust(width) + " " + " ".join(cells))
    return "\n".join(lines)


def table_text(header, rows):
    """A plain text table: columns padded to their widest cell."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)
