"""The GPT-2 model on nanograd, after nanoGPT's model.py: config, blocks, GPT, optimizer groups.

    model = GPT(GPTConfig(vocab_size=65))
    logits, loss = model(idx, targets)        # idx, targets: integer arrays (B, T)
    out = model.generate(idx, 100, top_k=40)  # see generate.py

A decoder-only transformer: token plus learned position embeddings, `n_layer` pre-LayerNorm
blocks (causal self-attention, then a GELU MLP, each inside a residual connection), a final
LayerNorm, and an output layer that reuses the token embedding matrix (weight tying).
`attn_only=True` drops the MLPs: the attention-only transformers in which Elhage et al.
(2021) and Olsson et al. (2022) read induction heads off the weights. `tie_embeddings=False`
gives the output layer its own matrix (`unembed`, TransformerLens's W_U) and
`embedding_init_std` sets the embeddings' initial scale: the two settings under which an
induction head forms in configs/induction.toml (docs/emergence/induction.md says why).
Parameter names match GPT-2's checkpoints one to one (hf.py converts the weights).

Segments pack several sequences into one row: with `segments` (B, T) of ids, a token attends
only to earlier tokens of its own segment, and its position is its index within that segment,
so a row holding conversations A and B gives the logits of A alone and of B alone. Left
padding is a segment of its own (generate.py's attention_mask).

    logits, loss = model(idx, targets, segments=segments)   # segments: integer array (B, T)

For decoding, `KVCache` keeps every layer's keys and values so that each new token costs
one position of attention instead of a re-run over the whole context.

For looking inside, every named activation is a hook point (the list is in `GPT.hook_names`):

    logits, cache = model.run_with_cache(idx)   # cache["blocks.0.attn.pattern"]: (B, H, T, T) array
    logits, loss = model.run_with_hooks(idx, {"blocks.1.attn.head_out": fn}, targets)

    embed                    token + position embeddings, after dropout    (B, T, C)
    blocks.{i}.resid_pre     residual stream entering block i              (B, T, C)
    blocks.{i}.ln_1          ln_1 output, the attention's input            (B, T, C)
    blocks.{i}.attn.pattern  attention pattern softmax(QK^T/sqrt(D)+mask)  (B, H, T, Tk)
    blocks.{i}.attn.head_out each head's output P V, before heads merge    (B, H, T, D)
    blocks.{i}.attn_out      attention sublayer output (after c_proj)      (B, T, C)
    blocks.{i}.resid_mid     resid_pre + attn_out                          (B, T, C)
    blocks.{i}.ln_2          ln_2 output, the MLP's input                  (B, T, C)
    blocks.{i}.mlp.pre       c_fc output, before GELU                      (B, T, 4C)
    blocks.{i}.mlp.post      GELU output                                   (B, T, 4C)
    blocks.{i}.mlp_out       MLP sublayer output (after c_proj)            (B, T, C)
    blocks.{i}.resid_post    resid_mid + mlp_out, leaving block i          (B, T, C)
                             (attn_only models have no ln_2, mlp.*, mlp_out; resid_post = resid_mid)
    ln_f                     final LayerNorm output, before the unembedding (B, T, C)

Head h writes head_out[:, h] @ c_proj.weight[:, h*D:(h+1)*D].T into the residual stream, so
zeroing head_out[:, h] removes exactly that head (c_proj's bias stays). A hook is
`fn(activation Tensor) -> None | replacement` (a Tensor or array of the same shape); a
Tensor replacement keeps gradients flowing. Outside those two methods a hook point is one
attribute check (benchmarks/hooks_overhead.py), and the attention pattern is only ever
materialised as a Tensor when a hook or the cache asks for it.

Left out: dropout on the attention pattern (the fused attention op has none), flash
attention, hooks on q, k and v separately, caching activations across generate() steps.
"""
import dataclasses
import math

import numpy as np

import nanograd as ng
from nanograd import backend, nn
from nanograd import functional as F
from nanograd.attention import causal_mask, segment_mask


@dataclasses.dataclass
class GPTConfig:
    block_size: int = 256  # longest context, in tokens (number of learned positions)
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    attn_only: bool = False  # drop the MLP blocks (Olsson et al.'s attention-only transformers)
    tie_embeddings: bool = True  # the output layer is the token embedding (GPT-2); False: its own matrix
    embedding_init_std: float = 0.02  # init std of wte and wpe (GPT-2: 0.02; nn.Embedding's default: 1)

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "choose n_embd a multiple of n_head (each head gets n_embd // n_head dims)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not 0 < self.embedding_init_std < math.inf:
            raise ValueError(f"embedding_init_std={self.embedding_init_std} must be a positive number")


class KVCache:
    """Keys and values of the positions seen so far, for every layer, preallocated.

    Each layer writes its new keys and values (B, H, T, D) into a (B, H, block_size, D)
    buffer at positions [length, length + T) and attends over [0, length + T). The model
    calls `advance(T)` once all layers have written, and uses `length` as the position of
    its first new token. `reset()` empties it (generate.py does so when its window slides).
    With segments the cache keeps each position's segment id too (B, block_size), from which
    the model takes the masks and positions of the new tokens: a cache is filled with
    segments at every call, or at none.
    """

    def __init__(self, config, batch_size, dtype=np.float32, xp=np):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_dim)
        self.k = xp.zeros(shape, dtype=dtype)
        self.v = xp.zeros(shape, dtype=dtype)
        self.length = 0  # positions filled, the same for every layer
        self.segments = None  # (B, block_size) segment ids of the positions, once given

    def store(self, layer, k, v):
        """Write arrays k, v (B, H, T, D) after the cached positions; return all keys, values (B, H, length + T, D)."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def store_segments(self, segments):
        """Write segment ids (B, T) after the cached positions; return all of them (B, length + T), or None."""
        if self.length and (segments is None) != (self.segments is None):
            raise ValueError("KVCache: give segments at every call or at none; the cached positions were stored "
                             + ("with" if self.segments is not None else "without") + " them")
        if segments is None:
            return None
        if self.segments is None:
            self.segments = np.zeros((self.k.shape[1], self.k.shape[3]), dtype=np.int64)  # (B, block_size)
        end = self.length + segments.shape[1]
        self.segments[:, self.length:end] = segments
        return self.segments[:, :end]

    def advance(self, n):
        self.length += n

    def reset(self):
        self.length = 0
        self.segments = None

    def reorder(self, rows):
        """Let row i hold what row rows[i] held (beam search moves hypotheses between rows)."""
        n = self.length
        for kv in (self.k, self.v):  # (n_layer, B, H, block_size, D)
            kv[:, :, :, :n] = kv[:, rows, :, :n]
        if self.segments is not None:
            self.segments[:, :n] = self.segments[rows, :n]


class HookPoints:
    """The hooks of one model while run_with_hooks / run_with_cache runs: {name: fn}, else None.

    Each module reaches it through a `HookScope` that adds the module's name prefix.
    """

    def __init__(self):
        self.fns = None

    def apply(self, name, x):
        """x, or the Tensor that the hook registered under `name` returns in its place."""
        fn = self.fns.get(name)
        out = None if fn is None else fn(x)
        if out is None:
            return x
        out = out if isinstance(out, ng.Tensor) else ng.Tensor(backend.get_array_module(x.data).asarray(out, x.dtype))
        if out.shape != x.shape:
            raise ValueError(f"hook {name!r} returned shape {out.shape}; the activation has shape {x.shape}")
        return out


class HookScope:
    """A module's view of the shared HookPoints: `scope(key, x)` is the hook point `prefix + key`."""

    def __init__(self, points, prefix):
        self.points, self.prefix = points, prefix

    def __call__(self, key, x):
        """x itself (one attribute check) unless a hook run is active."""
        return x if self.points.fns is None else self.points.apply(self.prefix + key, x)

    def wants(self, key):
        """Whether a hook (or the activation cache) is registered at `prefix + key`."""
        return self.points.fns is not None and self.prefix + key in self.points.fns


def attention_pattern(q, k, segments=None):
    """The fused op's pattern as a differentiable Tensor: softmax(Q K^T / sqrt(D) + causal [+ segment] mask).

    q (B, H, Tq, D), k (B, H, Tk, D), segments None or ids (B, Tk) -> (B, H, Tq, Tk). Same
    arithmetic, in the same order, as nanograd.attention.attention_pattern, so `pattern @ v`
    reproduces the fused output (exactly below 2 * attention.TILE positions; beyond, the fused
    op's causal tiles sum shorter rows, which can differ in the last bit).
    """
    xp = backend.get_array_module(q.data)
    s = (q * (1 / math.sqrt(q.shape[-1]))) @ k.transpose(0, 1, 3, 2)  # (B, H, Tq, Tk)
    mask = causal_mask(xp, q.shape[-2], k.shape[-2], s.dtype)  # (Tq, Tk)
    if segments is not None:
        mask = mask + segment_mask(segments, q.shape[-2], s.dtype)  # (B, 1, Tq, Tk)
    return F.softmax(s + mask, axis=-1)


def segment_positions(segments, T):
    """The position of each of the last T tokens within its own segment: ids (B, Tk) -> (B, T).

    A token's position is the number of earlier tokens in its segment, so every segment
    counts 0, 1, 2, ... from its own first token, wherever it sits in the row.
    """
    Tk = segments.shape[1]
    seen = segments[:, -T:, None] == segments[:, None, :]  # (B, T, Tk) same segment
    seen &= np.tri(T, Tk, Tk - T, dtype=bool)  # and not in the future: j <= i + Tk - T
    return seen.sum(axis=-1) - 1  # (B, T)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused q, k, v projection, one output projection."""

    def __init__(self, config, layer, hook):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer  # this block's index into a KVCache
        self.hook = hook  # a HookScope, prefix "blocks.{layer}.attn."
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, segments=None):
        """x (B, T, C) -> (B, T, C). segments: None or ids (B, Tk) of every key's segment (cached keys first)."""
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.c_attn(x)  # (B, T, 3C)
        if cache is None and not (self.hook.wants("pattern") or self.hook.wants("head_out")):
            # the fast path: the same arithmetic as below, with the heads as views, never copied
            return self.resid_dropout(self.c_proj(F.causal_self_attention(qkv, H, segments)))  # (B, T, C)
        qkv = qkv.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # (B, T, 3C) -> (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, H, T, D)
        if cache is not None:  # attend over the cached positions too
            k, v = (ng.Tensor(a) for a in cache.store(self.layer, k.data, v.data))  # (B, H, Tk, D)
        if self.hook.wants("pattern"):  # materialise the pattern only when asked
            y = self.hook("pattern", attention_pattern(q, k, segments)) @ v  # (B, H, T, Tk) @ (B, H, Tk, D)
        else:
            y = F.scaled_dot_product_attention(q, k, v, causal=True, segments=segments)  # (B, H, T, D)
        y = self.hook("head_out", y)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # merge heads: (B, T, H, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C, GELU (tanh), 4C -> C."""

    def __init__(self, config, hook):
        super().__init__()
        self.hook = hook  # a HookScope, prefix "blocks.{layer}.mlp."
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.hook("pre", self.c_fc(x))  # (B, T, C) -> (B, T, 4C)
        return self.dropout(self.c_proj(self.hook("post", F.gelu(h))))  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    With config.attn_only the block is x + attn(ln_1(x)) alone (no ln_2, no MLP), and
    resid_post is resid_mid.
    """

    def __init__(self, config, layer, points):
        super().__init__()
        prefix = f"blocks.{layer}."
        self.hook = HookScope(points, prefix)
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer, HookScope(points, prefix + "attn."))
        if not config.attn_only:
            self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config, HookScope(points, prefix + "mlp."))

    def forward(self, x, cache=None, segments=None):
        h = self.hook
        x = h("resid_pre", x)  # (B, T, C)
        x = h("resid_mid", x + h("attn_out", self.attn(h("ln_1", self.ln_1(x)), cache, segments)))
        if not hasattr(self, "mlp"):  # attention-only
            return h("resid_post", x)
        return h("resid_post", x + h("mlp_out", self.mlp(h("ln_2", self.ln_2(x)))))


class GPT(nn.Module):
    """The language model: ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.hook_points = HookPoints()
        self.hook = HookScope(self.hook_points, "")
        self.transformer = nn.Module()  # a named container (nanoGPT's ModuleDict): the `transformer.` prefix
        self.transformer.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.transformer.drop = nn.Dropout(config.dropout)
        self.transformer.h = nn.ModuleList(Block(config, i, self.hook_points) for i in range(config.n_layer))
        self.transformer.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        if not config.tie_embeddings:
            self.unembed = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # W_U (V, C)
        self._init_weights()

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02) matrices and embeddings, zero biases, LayerNorm scale 1.

        The residual projections (c_proj) get std 0.02 / sqrt(2 n_layer), so the residual
        stream's variance does not grow with depth; the embeddings wte and wpe get
        config.embedding_init_std. Draws come from nanograd's generator.
        """
        rng = backend.rng()
        c = self.config
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = (0.02 / math.sqrt(2 * c.n_layer) if name.endswith("c_proj.weight")
                       else c.embedding_init_std if name in ("transformer.wte.weight", "transformer.wpe.weight")
                       else 0.02)
                p.data = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(std)
            elif name.endswith("bias"):
                p.data = np.zeros(p.shape, dtype=np.float32)

    def forward(self, idx, targets=None, cache=None, segments=None):
        """(logits (B, T, vocab_size), mean cross-entropy loss or None).

        idx: integer ids (B, T), a NumPy array or Tensor. targets: ids (B, T), -1 ignored.
        cache: a KVCache (inference only, under ng.no_grad()): idx then holds the tokens
        that follow the cached ones, at positions cache.length onwards.
        segments: None (one sequence per row), or integer ids (B, T): token i attends to token
        j iff j <= i and both have the same id, and its position counts from its segment's
        first token (with a cache, the cached tokens' ids, given earlier, count too).
        """
        logits = self.lm_head(self.hidden_states(idx, cache, segments))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx, cache=None, segments=None):
        """The final LayerNorm's output (B, T, C): everything but the output layer (arguments as forward)."""
        idx = idx if isinstance(idx, ng.Tensor) else np.asarray(idx)
        if idx.ndim != 2:
            raise ValueError(f"idx must be an integer array (B, T), got shape {tuple(idx.shape)}")
        if cache is not None and ng.is_grad_enabled():
            raise RuntimeError("a KVCache is for inference: run the model under ng.no_grad()")
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # position of the first token of idx
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length T={start + T} is longer than block_size="
                             f"{self.config.block_size}; crop the input to its last {self.config.block_size} tokens")
        if segments is not None:
            segments = backend.to_device(segments, "cpu")  # positions and the cache's ids are host arrays
            if segments.shape != (B, T) or segments.dtype.kind not in "iu":
                raise ValueError(f"segments must be integer ids of the shape of idx {(B, T)}, "
                                 f"got {segments.dtype} {segments.shape}")
        if cache is not None:
            segments = cache.store_segments(segments)  # (B, start + T): the cached tokens' ids first
        t = self.transformer
        pos = np.arange(start, start + T) if segments is None else segment_positions(segments, T)  # (T,) or (B, T)
        x = self.hook("embed", t.drop(t.wte(idx) + t.wpe(pos)))  # (B, T, C) + (T or B, T, C) -> (B, T, C)
        if segments is not None:
            segments = backend.get_array_module(t.wte.weight.data).asarray(segments)  # to the model's device, once
        for block in t.h:
            x = block(x, cache, segments)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return self.hook("ln_f", t.ln_f(x))

    def lm_head(self, x):
        """Logits (..., vocab_size) of hidden states x (..., C): x @ wte^T (tied) or x @ W_U^T."""
        return F.linear(x, self.unembedding())

    def unembedding(self):
        """The output layer's matrix (vocab_size, C): the token embedding unless config.tie_embeddings is off."""
        return self.transformer.wte.weight if self.config.tie_embeddings else self.unembed.weight

    def hook_names(self):
        """Every hook point's name, in the order a forward pass reaches them (see the module docstring)."""
        block = ("resid_pre", "ln_1", "attn.pattern", "attn.head_out", "attn_out", "resid_mid",
                 "ln_2", "mlp.pre", "mlp.post", "mlp_out", "resid_post")
        if self.config.attn_only:
            block = tuple(k for k in block if not k.startswith(("ln_2", "mlp")))
        return ["embed", *(f"blocks.{i}.{k}" for i in range(self.config.n_layer) for k in block), "ln_f"]

    def run_with_hooks(self, idx, hooks, targets=None, segments=None):
        """(logits, loss) of one forward pass in which each hooks[name](activation) may replace it.

        hooks: {hook point name: fn(Tensor) -> None | Tensor or array of the same shape}.
        segments: as forward (the attention patterns are then zero across segments).
        """
        known = set(self.hook_names())
        unknown = [name for name in hooks if name not in known]
        if unknown:
            raise ValueError(f"no hook point named {unknown[0]!r}; GPT.hook_names() lists them "
                             f"(blocks.0 to blocks.{self.config.n_layer - 1}, e.g. 'blocks.0.attn.pattern')")
        self.hook_points.fns = dict(hooks)
        try:
            return self(idx, targets, segments=segments)
        finally:
            self.hook_points.fns = None

    def run_with_cache(self, idx, names=None, segments=None):
        """(logits, {name: array}): one forward pass that records the named activations.

        names: the hook points to record (default: all of them); segments: as forward. The arrays are the
        activations' data (on the model's device), not Tensors, so they hold no graph.
        """
        cache = {}
        def recorder(name):
            return lambda x: cache.__setitem__(name, x.data)
        names = self.hook_names() if names is None else names
        logits, _ = self.run_with_hooks(idx, {name: recorder(name) for name in names}, segments=segments)
        return logits, cache

    def new_cache(self, batch_size):
        """An empty KVCache for `batch_size` sequences, on this model's device and dtype."""
        w = self.transformer.wte.weight
        return KVCache(self.config, batch_size, w.dtype, backend.get_array_module(w.data))

    def generate(self, idx, max_new_tokens, **options):
        """Continue each row of idx (B, T) by max_new_tokens tokens; generate.generate lists the options."""
        from .generate import generate
        return generate(self, idx, max_new_tokens, **options)

    def num_params(self, non_embedding=True):
        """Number of parameters; by default without the position embeddings, as nanoGPT.

        The token embedding stays counted: it is also the output layer (when tied).
        """
        n = sum(p.size for p in self.parameters())
        return n - self.transformer.wpe.weight.size if non_embedding else n

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        """AdamW with two groups: decay on 2-D weights (matmuls, embeddings), none on biases and LayerNorm."""
        params = self.parameters()
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return ng.optim.AdamW(groups, lr=learning_rate, betas=betas)

    def resize_token_embeddings(self, new_vocab_size):
        """Grow the vocabulary to new_vocab_size ids (a tokenizer gained special tokens); return self.

        The new rows of wte (and of unembed, when untied) are the mean of the old rows, as Hugging
        Face's resize_token_embeddings: a new token starts as an average one, so neither its
        embedding nor its logit stands out. config.vocab_size follows. Shrinking is refused:
        the ids it would drop may be in use. Build the optimizer after resizing (its moments
        take the parameters' shapes).
        """
        V = self.config.vocab_size
        if new_vocab_size < V:
            raise ValueError(f"resize_token_embeddings: {new_vocab_size} is smaller than vocab_size={V}; shrinking "
                             "would drop ids the tokenizer may use (only growing is supported)")
        matrices = [self.transformer.wte.weight] + ([] if self.config.tie_embeddings else [self.unembed.weight])
        for p in matrices:  # each (V, C)
            xp = backend.get_array_module(p.data)
            mean = p.data.mean(axis=0, keepdims=True)  # (1, C)
            p.data = xp.concatenate([p.data, xp.repeat(mean, new_vocab_size - V, axis=0)])  # (V, C) -> (new, C)
            p.grad = None
        self.config = dataclasses.replace(self.config, vocab_size=new_vocab_size)
        return self

    def crop_block_size(self, block_size):
        """Shrink the context to `block_size` positions (e.g. to fine-tune with less memory)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"crop_block_size: {block_size} must be between 1 and the current "
                             f"block_size={self.config.block_size}")
        self.config = dataclasses.replace(self.config, block_size=block_size)
        wpe = self.transformer.wpe.weight
        wpe.data = wpe.data[:block_size].copy()
        wpe.grad = None
