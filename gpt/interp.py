"""Looking inside a trained GPT: induction heads, the logit lens, head ablation, text heatmaps.

Everything here is built on the model's hook points (gpt/model.py lists their names):

    scores = induction_scores(model)               # (n_layer, n_head), in [0, 1]
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


def induction_scores_from_patterns(patterns, repeat_len):
    """(n_layer, n_head) mean attention from t to t - L + 1, over t in the second repeat.

    patterns: one attention pattern per layer, each (B, H, 2L, 2L), on repeated tokens.
    """
    t = np.arange(repeat_len, 2 * repeat_len)
    return np.stack([backend.to_device(p[:, :, t, t - repeat_len + 1], "cpu").mean(axis=(0, 2))
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


def induction_run(model, repeat_len=None, batch_size=8, seed=0):
    """(scores (n_layer, n_head), first-repeat loss, second-repeat loss) on repeated random tokens.

    repeat_len defaults to min(32, block_size // 2); the tokens come from np.random.default_rng(seed).
    """
    L = repeat_len or min(DEFAULT_REPEAT_LEN, model.config.block_size // 2)
    if not 2 <= L <= model.config.block_size // 2:
        raise ValueError(f"repeat_len={L}: twice it must fit in block_size={model.config.block_size}, "
                         "and it must be at least 2")
    ids = repeated_random_tokens(model.config.vocab_size, L, batch_size, np.random.default_rng(seed))
    names = [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layer)]
    with inference_mode(model):
        logits, cache = model.run_with_cache(ids, names)
    first, second = repeat_losses(logits.numpy(), ids, L)
    return induction_scores_from_patterns([cache[n] for n in names], L), first, second


def emergence_metrics(model, seed=0, repeat_len=None, batch_size=8):
    """The numbers train.py --track_emergence logs at each evaluation.

    {"induction_score": best head's score, "induction_scores": per layer, per head (lists),
     "icl_loss_drop": first-repeat loss minus second-repeat loss}.
    """
    scores, first, second = induction_run(model, repeat_len, batch_size, seed)
    return {"induction_score": float(scores.max()), "induction_scores": np.round(scores, 4).tolist(),
            "icl_loss_drop": first - second}


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
    """A hook for `blocks.{i}.attn.head_out` (B, H, T, D): head `head` becomes zeros, or `fill` (D,).

    Written with Tensor ops (a mask times x, plus the fill), so gradients still flow.
    """
    def hook(x):
        xp = backend.get_array_module(x.data)
        keep = xp.ones((1, x.shape[1], 1, 1), dtype=x.dtype)
        keep[0, head] = 0
        if fill is None:
            return x * keep
        added = xp.zeros((1, x.shape[1], 1, x.shape[3]), dtype=x.dtype)
        added[0, head, 0] = xp.asarray(fill)
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
