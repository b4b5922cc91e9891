"""Autoregressive generation: the decoding loop, its context window, and the logits processors.

    out = model.generate(idx, 200, temperature=0.8, top_k=40, seed=0)   # idx: int array (B, T)

Each step turns the logits of the last position (B, V) into one new token per row. The
options mean what they mean in Hugging Face `generate` and are applied in its order:

    1. repetition_penalty, no_repeat_ngram_size   (on the whole sequence, prompt included)
    2. temperature == 0: greedy, argmax
       otherwise: temperature, top_k, top_p, then draw from the softmax

so a model converted from GPT-2 decodes exactly as transformers does (tests/gpt/test_generate.py).
Several samples are rows of one batch; an eos token finishes its row, which is then padded
with eos, and generation stops early once every row has finished.

Beam search (num_beams > 1, see beam_search) is Hugging Face's `do_sample=False` beam search,
token for token: it keeps the num_beams best partial sequences by summed log-probability
and returns the best finished ones (tests/gpt/test_beam.py).

Context window. The model sees at most block_size tokens; a longer prompt is cropped from
the left. A KV cache makes each new token cost one position of attention. Once the
window is full it slides, as in nanoGPT: every later token is predicted from the newest
block_size tokens, and since their positions have all shifted, the cache is rebuilt for
that window by one forward pass (so past block_size each token costs a full forward).
`use_cache=False` re-runs the whole window every step with the same rule, which is the
reference the cache is tested against.

Prompts of different lengths. As in Hugging Face, they are LEFT-padded to one length and
`attention_mask` (B, T) says 1 for a real token, 0 for padding:

    out = model.generate(idx, 50, attention_mask=mask, temperature=0)   # idx: padded prompts (B, T)

Padding becomes a segment of its own (model.py's `segments`: 0 on padding, 1 on the prompt
and every new token), so no real token attends to it and each row's positions start at its
first real token; the logits processors skip it too. Each row then decodes as it would
alone (its logits may differ in the last bit: its sums also run over the masked zeros).
That holds past block_size as well: the window is the newest block_size columns; a row
still shorter than that keeps all its tokens (and some masked padding) in it, a longer one
keeps its newest block_size tokens, which is the window it would have alone.

Left out: sampling inside beam search (HF's beam sampling), diverse and constrained beam
search, right padding, min_length and other stopping rules.
"""
import contextlib

import numpy as np

import nanograd as ng
from nanograd import backend
from nanograd.functional import softmax_array


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0,
             no_repeat_ngram_size=0, eos_token_id=None, seed=None, stream=None, use_cache=True, num_beams=1,
             length_penalty=1.0, early_stopping=False, num_return_sequences=1, attention_mask=None):
    """Continue each row of idx (B, T) by up to max_new_tokens tokens; return int64 (B, T + new).

    temperature: 0 means greedy; top_k, top_p: None for off. seed: an int gives a private
    generator (same seed, same text); None draws from nanograd's global generator.
    stream: called with each new token column (B,) as it is chosen. use_cache: False for
    the uncached reference. The model runs in eval mode (no dropout) and under no_grad.
    num_beams > 1: beam_search with length_penalty, early_stopping, num_return_sequences
    (deterministic, as HF's do_sample=False: temperature, top_k, top_p, seed are not used).
    attention_mask: None, or (B, T) of 1 (token) / 0 (padding) for left-padded prompts of
    different lengths; the output keeps the padding in front of each row.
    """
    idx = np.asarray(idx)
    _check_options(idx, max_new_tokens, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size,
                   eos_token_id, model.config.vocab_size, num_beams, early_stopping, num_return_sequences, stream)
    segments = padding_segments(attention_mask, idx, max_new_tokens)  # (B, T + max_new_tokens) or None
    if num_beams > 1:
        return beam_search(model, idx, max_new_tokens, num_beams, length_penalty, early_stopping,
                           num_return_sequences, repetition_penalty, no_repeat_ngram_size, eos_token_id, use_cache,
                           segments)
    B, T = idx.shape
    seq = np.empty((B, T + max_new_tokens), dtype=np.int64)  # prompt, then the new tokens
    seq[:, :T] = idx
    length = T
    rng = np.random.default_rng(seed) if seed is not None else backend.rng()
    window = ContextWindow(model, B, T, use_cache)
    finished = np.zeros(B, dtype=bool)
    with inference_mode(model):
        for _ in range(max_new_tokens):
            ids = seq[:, :length]  # (B, L) everything so far
            logits = window.next_logits(ids, segments)  # (B, V)
            tokens = without_padding(ids, segments)  # (B, L), padding -1
            logits = ban_repeated_ngrams(penalize_repetition(logits, tokens, repetition_penalty), tokens,
                                         no_repeat_ngram_size)
            if temperature == 0:
                token = logits.argmax(axis=-1)  # (B,)
            else:
                logits = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
                token = sample(logits, rng)  # (B,)
            if eos_token_id is not None:
                token[finished] = eos_token_id  # finished rows are padded with eos
                finished |= token == eos_token_id
            seq[:, length] = token
            length += 1
            if stream is not None:
                stream(token)
            if finished.all():
                break
    return seq[:, :length]


def beam_search(model, idx, max_new_tokens, num_beams, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=None,
                use_cache=True, segments=None):
    """The num_return_sequences best of num_beams hypotheses for each row of idx (B, T), as HF's beam search.

    Returns int64 (B * num_return_sequences, T + n), the best first within each prompt, n the
    longest returned continuation (shorter ones padded with eos). Each step extends every
    running beam by every token, scoring the sum of log-probabilities (after the logits
    processors); the best 2 * num_beams candidates are kept: those among the first num_beams
    that end (eos, or max_new_tokens reached) join the finished hypotheses with score
    sum / n ** length_penalty (n: new tokens, eos included), the best num_beams that do not end
    run on. A row stops taking finished hypotheses once early_stopping=True and it holds
    num_beams of them, or once its best running beam cannot beat its worst finished one:
    estimated at the current length, or, for early_stopping="never" with length_penalty > 0,
    at max_new_tokens. The search ends when no row can improve. segments: padding_segments'
    ids (B, T + max_new_tokens) for left-padded prompts, or None.
    """
    idx = np.asarray(idx)
    (B, T), K, V = idx.shape, num_beams, model.config.vocab_size
    segments = None if segments is None else np.repeat(segments, K, axis=0)  # (B*K, T + max_new_tokens)
    seqs = np.repeat(idx[:, None, :], K, axis=1).astype(np.int64)  # (B, K, L) the running beams
    scores = np.zeros((B, K), np.float32)  # (B, K) their summed log-probabilities
    scores[:, 1:] = -1e9  # every beam holds the prompt: expand only the first at step one
    finished = FinishedHypotheses(idx, K, max_new_tokens, 0 if eos_token_id is None else eos_token_id)
    improvable = np.ones(B, dtype=bool)  # rows whose finished set can still change
    window = ContextWindow(model, B * K, T, use_cache)
    with inference_mode(model):
        for step in range(max_new_tokens):
            ids = seqs.reshape(B * K, T + step)
            logprobs = log_softmax(window.next_logits(ids, segments))  # (B*K, V)
            tokens = without_padding(ids, segments)  # (B*K, L), padding -1
            logprobs = ban_repeated_ngrams(penalize_repetition(logprobs, tokens, repetition_penalty), tokens,
                                           no_repeat_ngram_size)
            total = (logprobs.reshape(B, K, V) + scores[:, :, None]).reshape(B, K * V)
            top = np.argsort(-total, axis=1, kind="stable")[:, :2 * K]  # (B, 2K) best candidates
            top_scores = np.take_along_axis(total, top, axis=1)
            beam, token = np.divmod(top, V)  # (B, 2K) each: the beam extended and its new token
            candidates = np.concatenate([np.take_along_axis(seqs, beam[:, :, None], axis=1), token[:, :, None]], 2)
            ends = (token == eos_token_id) | (step + 1 == max_new_tokens)  # (B, 2K)
            joins = ends & (np.arange(2 * K) < K) & improvable[:, None]
            if early_stopping is True:
                joins &= ~finished.full()[:, None]
            finished.add(candidates, top_scores / np.float32((step + 1) ** length_penalty), joins)
            running = np.argsort(ends, axis=1, kind="stable")[:, :K]  # (B, K) the best that do not end
            seqs = np.take_along_axis(candidates, running[:, :, None], axis=1)
            scores = np.take_along_axis(top_scores, running, axis=1)
            window.reorder((np.take_along_axis(beam, running, axis=1) + K * np.arange(B)[:, None]).reshape(-1))
            best_length = max_new_tokens if early_stopping == "never" and length_penalty > 0 else step + 1
            improvable &= ~finished.full() | (scores[:, 0] / np.float32(best_length ** length_penalty)
                                              > finished.scores.min(axis=1))
            if not improvable.any() or (early_stopping is True and finished.full().all()):
                break
    return finished.best(num_return_sequences)


class FinishedHypotheses:
    """The num_beams best finished hypotheses of each prompt, best first, as fixed-size arrays.

    seqs (B, K, T + max_new_tokens) padded with `pad`, scores (B, K) (-inf: an empty slot),
    lengths (B, K) new tokens of each.
    """

    def __init__(self, idx, num_beams, max_new_tokens, pad):
        (B, T), K = idx.shape, num_beams
        self.prompt_length = T
        self.seqs = np.full((B, K, T + max_new_tokens), pad, dtype=np.int64)
        self.seqs[:, :, :T] = idx[:, None, :]
        self.scores = np.full((B, K), -np.inf, np.float32)
        self.lengths = np.zeros((B, K), dtype=np.int64)
        self.pad = pad

    def full(self):
        """(B,) True where all num_beams slots hold a finished hypothesis."""
        return np.isfinite(self.scores).all(axis=1)

    def add(self, candidates, scores, joins):
        """Merge candidates (B, C, L) with scores (B, C) where joins (B, C); keep the best num_beams."""
        B, C, L = candidates.shape
        padded = np.full((B, C, self.seqs.shape[2]), self.pad, dtype=np.int64)
        padded[:, :, :L] = candidates
        all_scores = np.concatenate([self.scores, np.where(joins, scores, -np.inf)], axis=1)
        best = np.argsort(-all_scores, axis=1, kind="stable")[:, :self.scores.shape[1]]  # (B, K)
        self.seqs = np.take_along_axis(np.concatenate([self.seqs, padded], 1), best[:, :, None], axis=1)
        self.scores = np.take_along_axis(all_scores, best, axis=1)
        lengths = np.concatenate([self.lengths, np.full((B, C), L - self.prompt_length)], axis=1)
        self.lengths = np.take_along_axis(lengths, best, axis=1)

    def best(self, n):
        """The n best of each prompt, (B * n, T + longest), best first."""
        end = self.prompt_length + self.lengths[:, :n].max()
        return self.seqs[:, :n, :end].reshape(-1, end)


@contextlib.contextmanager
def inference_mode(model):
    """Eval mode (no dropout) and no_grad inside; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with ng.no_grad():
            yield
    finally:
        model.train(was_training)


class ContextWindow:
    """The tokens the model conditions on: the sequence from `start`, at most block_size long.

    With a cache, the cache holds the window's first `cache.length` tokens, so only the
    tokens after them are fed; without one, the whole window is re-run every step.
    """

    def __init__(self, model, batch_size, prompt_length, use_cache):
        self.model = model
        self.block_size = model.config.block_size
        self.start = max(0, prompt_length - self.block_size)  # crop a long prompt from the left
        self.cache = model.new_cache(batch_size) if use_cache else None

    def next_logits(self, ids, segments=None):
        """Logits (B, V), a NumPy array, for the token that follows ids (B, L).

        segments: None, or segment ids (B, >= L) of the sequence (padding_segments).
        """
        L = ids.shape[1]
        if L - self.start > self.block_size:  # full: slide to the newest block_size tokens
            self.start = L - self.block_size
            if self.cache is not None:
                self.cache.reset()
        fed = self.start + (self.cache.length if self.cache is not None else 0)  # first token not in the cache
        fed_segments = None if segments is None else segments[:, fed:L]  # (B, L - fed)
        h = self.model.hidden_states(ids[:, fed:], self.cache, fed_segments)  # (B, L - fed, C)
        return self.model.lm_head(h[:, -1]).numpy()  # (B, V), the last position only

    def reorder(self, rows):
        """Let row i hold what row rows[i] held (beam search moves hypotheses between rows)."""
        if self.cache is not None:
            self.cache.reorder(rows)


def padding_segments(attention_mask, idx, max_new_tokens):
    """The model's segment ids (B, T + max_new_tokens) for left-padded prompts idx (B, T), or None.

    0 on padding, 1 on the prompt and on every token generated after it. attention_mask:
    (B, T) of 1 (token) / 0 (padding), each row's zeros before its ones, or None.
    """
    if attention_mask is None:
        return None
    mask = np.asarray(attention_mask)
    if mask.shape != idx.shape:
        raise ValueError(f"generate: attention_mask must have the shape of idx {idx.shape}, got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("generate: attention_mask must hold only 1 (token) and 0 (padding)")
    mask = mask.astype(np.int64)  # booleans too
    if (np.diff(mask, axis=1) < 0).any():
        raise ValueError("generate: attention_mask must be left-padded (a row's zeros before its ones): "
                         "pad the prompts on the left")
    if not mask[:, -1].all():
        raise ValueError("generate: every row of attention_mask needs at least one token (a 1)")
    segments = np.ones((len(idx), idx.shape[1] + max_new_tokens), dtype=np.int64)
    segments[:, :idx.shape[1]] = mask
    return segments


def without_padding(ids, segments):
    """ids (B, L) with padding (segment 0) replaced by -1, which no logits processor counts."""
    return ids if segments is None else np.where(segments[:, :ids.shape[1]] > 0, ids, -1)


# ---- logits processors: (B, V) logits in, new (B, V) logits out, as Hugging Face's ------------
# ids (B, L) hold the sequence so far; -1 marks padding, which is never counted.
def penalize_repetition(logits, ids, penalty):
    """Make tokens present in ids (B, L) less likely: positive logits / penalty, negative * penalty.

    Each token counts once however often it occurs (HF's RepetitionPenaltyLogitsProcessor).
    """
    if penalty == 1.0:
        return logits
    seen = np.zeros((logits.shape[0], logits.shape[1] + 1), dtype=bool)  # (B, V + 1): padding (-1) marks the last
    np.put_along_axis(seen, ids, True, axis=1)
    seen = seen[:, :-1]  # (B, V)
    return np.where(seen, np.where(logits < 0, logits * penalty, logits / penalty), logits)


def ban_repeated_ngrams(logits, ids, n):
    """-inf for every token that would complete an n-gram already in ids (B, L).

    The candidate n-gram is the last n-1 tokens plus the next one; every earlier window of
    n tokens that starts with those n-1 bans its last token (HF's NoRepeatNGramLogitsProcessor).
    A window that holds padding never matches a suffix of real tokens, nor bans anything.
    """
    L = ids.shape[1]
    if n == 0 or L < n:
        return logits
    windows = np.lib.stride_tricks.sliding_window_view(ids, n, axis=1)  # (B, L - n + 1, n)
    suffix = ids[:, L - n + 1:]  # (B, n - 1)
    match = (windows[:, :, :-1] == suffix[:, None, :]).all(axis=-1) & (windows[:, :, -1] >= 0)  # (B, L - n + 1)
    rows, cols = np.nonzero(match)
    out = logits.copy()
    out[rows, windows[rows, cols, -1]] = -np.inf
    return out


def log_softmax(logits):
    """log softmax(logits) over the last axis, in the logits' dtype (beam search scores with it)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def apply_temperature(logits, temperature):
    """logits / temperature: below 1 sharpens the distribution, above 1 flattens it."""
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits, k):
    """-inf for all but the k largest logits of each row (ties with the k-th are kept)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    V = logits.shape[-1]
    kth = np.partition(logits, V - k, axis=-1)[:, V - k, None]  # (B, 1) the k-th largest
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits, p):
    """Nucleus: keep the smallest set of most likely tokens whose probability sums to >= p.

    As HF's TopPLogitsWarper: sort ascending, drop tokens whose cumulative probability is
    <= 1 - p, always keep the most likely one.
    """
    if p is None or p >= 1.0:
        return logits
    order = np.argsort(logits, axis=-1, kind="stable")  # (B, V) ascending
    cumulative = np.cumsum(softmax_array(np.take_along_axis(logits, order, axis=-1)), axis=-1)
    drop_sorted = cumulative <= 1 - p
    drop_sorted[:, -1] = False
    drop = np.empty_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)  # back to vocabulary order
    return np.where(drop, -np.inf, logits)


def sample(logits, rng):
    """One token id per row (B,), drawn from softmax(logits) with `rng`; -inf is never drawn."""
    cdf = np.cumsum(softmax_array(logits.astype(np.float64)), axis=-1)  # (B, V)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]  # (B, 1) uniform in [0, total)
    return (cdf <= u).sum(axis=-1)  # the first index whose cdf exceeds u


def _check_options(idx, max_new_tokens, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size,
                   eos_token_id, vocab_size, num_beams, early_stopping, num_return_sequences, stream):
    """Raise a one-line ValueError for the first bad argument."""
    if idx.ndim != 2 or idx.shape[1] == 0 or idx.dtype.kind not in "iu":
        raise ValueError(f"generate: idx must be a non-empty integer array (B, T), got {idx.dtype} {idx.shape}")
    if (idx.min() < 0 or idx.max() >= vocab_size):
        raise ValueError(f"generate: token ids must be in [0, {vocab_size}), got {idx.min()}..{idx.max()}")
    checks = [
        (max_new_tokens >= 0, f"max_new_tokens={max_new_tokens} must be >= 0"),
        (temperature >= 0, f"temperature={temperature} must be >= 0 (0 means greedy)"),
        (top_k is None or top_k >= 1, f"top_k={top_k} must be >= 1, or None for off"),
        (top_p is None or 0 <= top_p <= 1, f"top_p={top_p} must be in [0, 1], or None for off"),
        (repetition_penalty > 0, f"repetition_penalty={repetition_penalty} must be > 0 (1 means off)"),
        (no_repeat_ngram_size >= 0, f"no_repeat_ngram_size={no_repeat_ngram_size} must be >= 0 (0 means off)"),
        (eos_token_id is None or 0 <= eos_token_id < vocab_size,
         f"eos_token_id={eos_token_id} must be a token id in [0, {vocab_size})"),
        (num_beams >= 1, f"num_beams={num_beams} must be >= 1 (1 means no beam search)"),
        (1 <= num_return_sequences <= num_beams,
         f"num_return_sequences={num_return_sequences} must be between 1 and num_beams={num_beams}"),
        (early_stopping in (True, False, "never"), f"early_stopping={early_stopping!r} must be True, False or 'never'"),
        (num_beams == 1 or stream is None, "beam search cannot stream: its best sequence is known only at the end"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"generate: {message}")
