"""The GPT-2 model on nanograd, after nanoGPT's model.py: config, blocks, GPT, optimizer groups.

    model = GPT(GPTConfig(vocab_size=65))
    logits, loss = model(idx, targets)        # idx, targets: integer arrays (B, T)
    out = model.generate(idx, 100, top_k=40)  # see generate.py

A decoder-only transformer: token plus learned position embeddings, `n_layer` pre-LayerNorm
blocks (causal self-attention, then a GELU MLP, each inside a residual connection), a final
LayerNorm, and an output layer that reuses the token embedding matrix (weight tying).
Parameter names match GPT-2's checkpoints one to one (hf.py converts the weights).

For decoding, `KVCache` keeps every layer's keys and values so that each new token costs
one position of attention instead of a re-run over the whole context.

Left out: dropout on the attention pattern (the fused attention op has none), flash
attention, loading pretrained GPT-2 weights by name (hf.py, later).
"""
import dataclasses
import math

import numpy as np

import nanograd as ng
from nanograd import backend, nn
from nanograd import functional as F


@dataclasses.dataclass
class GPTConfig:
    block_size: int = 256  # longest context, in tokens (number of learned positions)
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2

    def __post_init__(self):
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             "choose n_embd a multiple of n_head (each head gets n_embd // n_head dims)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


class KVCache:
    """Keys and values of the positions seen so far, for every layer, preallocated.

    Each layer writes its new keys and values (B, H, T, D) into a (B, H, block_size, D)
    buffer at positions [length, length + T) and attends over [0, length + T). The model
    calls `advance(T)` once all layers have written, and uses `length` as the position of
    its first new token. `reset()` empties it (generate.py does so when its window slides).
    """

    def __init__(self, config, batch_size, dtype=np.float32, xp=np):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, head_dim)
        self.k = xp.zeros(shape, dtype=dtype)
        self.v = xp.zeros(shape, dtype=dtype)
        self.length = 0  # positions filled, the same for every layer

    def store(self, layer, k, v):
        """Write arrays k, v (B, H, T, D) after the cached positions; return all keys, values (B, H, length + T, D)."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n):
        self.length += n

    def reset(self):
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused q, k, v projection, one output projection."""

    def __init__(self, config, layer):
        super().__init__()
        self.n_head = config.n_head
        self.layer = layer  # this block's index into a KVCache
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.c_attn(x).reshape(B, T, 3, H, D)  # (B, T, 3C) -> (B, T, 3, H, D)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, H, T, D)
        if cache is not None:  # attend over the cached positions too
            k, v = (ng.Tensor(a) for a in cache.store(self.layer, k.data, v.data))  # (B, H, Tk, D)
        y = F.scaled_dot_product_attention(q, k, v, causal=True)  # (B, H, T, D)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # merge heads: (B, T, H, D) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C, GELU (tanh), 4C -> C."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The language model: ids (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.Module()  # a named container (nanoGPT's ModuleDict): the `transformer.` prefix
        self.transformer.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.transformer.drop = nn.Dropout(config.dropout)
        self.transformer.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.transformer.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self._init_weights()

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02) matrices and embeddings, zero biases, LayerNorm scale 1.

        The residual projections (c_proj) get std 0.02 / sqrt(2 n_layer), so the residual
        stream's variance does not grow with depth. Draws come from nanograd's generator.
        """
        rng = backend.rng()
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj.weight") else 0.02
                p.data = rng.standard_normal(p.shape, dtype=np.float32) * np.float32(std)
            elif name.endswith("bias"):
                p.data = np.zeros(p.shape, dtype=np.float32)

    def forward(self, idx, targets=None, cache=None):
        """(logits (B, T, vocab_size), mean cross-entropy loss or None).

        idx: integer ids (B, T), a NumPy array or Tensor. targets: ids (B, T), -1 ignored.
        cache: a KVCache (inference only, under ng.no_grad()): idx then holds the tokens
        that follow the cached ones, at positions cache.length onwards.
        """
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx, cache=None):
        """The final LayerNorm's output (B, T, C): everything but the output layer."""
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
        t = self.transformer
        pos = np.arange(start, start + T)  # (T,)
        x = t.drop(t.wte(idx) + t.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for block in t.h:
            x = block(x, cache)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return t.ln_f(x)

    def lm_head(self, x):
        """Logits (..., vocab_size) of hidden states x (..., C), tied to the token embedding."""
        return F.linear(x, self.transformer.wte.weight)  # x @ wte^T

    def new_cache(self, batch_size):
        """An empty KVCache for `batch_size` sequences, on this model's device and dtype."""
        w = self.transformer.wte.weight
        return KVCache(self.config, batch_size, w.dtype, backend.get_array_module(w.data))

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0,
                 no_repeat_ngram_size=0, eos_token_id=None, seed=None, stream=None, use_cache=True):
        """Continue each row of idx (B, T) by max_new_tokens tokens; see generate.generate."""
        from .generate import generate
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                        eos_token_id=eos_token_id, seed=seed, stream=stream, use_cache=use_cache)

    def num_params(self, non_embedding=True):
        """Number of parameters; by default without the position embeddings, as nanoGPT.

        The token embedding stays counted: it is also the output layer.
        """
        n = sum(p.size for p in self.parameters())
        return n - self.transformer.wpe.weight.size if non_embedding else n

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        """AdamW with two groups: decay on 2-D weights (matmuls, embeddings), none on biases and LayerNorm."""
        params = self.parameters()
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return ng.optim.AdamW(groups, lr=learning_rate, betas=betas)

    def crop_block_size(self, block_size):
        """Shrink the context to `block_size` positions (e.g. to fine-tune with less memory)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"crop_block_size: {block_size} must be between 1 and the current "
                             f"block_size={self.config.block_size}")
        self.config = dataclasses.replace(self.config, block_size=block_size)
        wpe = self.transformer.wpe.weight
        wpe.data = wpe.data[:block_size].copy()
        wpe.grad = None
