"""A compact PyTorch GPT with exactly our architecture, for side-by-side benchmarks.

nanoGPT's model.py in miniature: pre-LN blocks, one fused c_attn projection, causal
scaled-dot-product attention, GELU (tanh approximation), weight tying between wte and
lm_head, init N(0, 0.02) with c_proj at 0.02/sqrt(2 n_layer) and zero biases. The
parameter names and layouts are those of gpt/model.py (Linear weights are (out, in)), so

    torch_model.load_state_dict(torch_state_dict_from_ours(our_model.state_dict()))

makes the two the same function. `build_pair(config, seed)` builds both that way.
Benchmark-only: nothing under nanograd/ or gpt/ imports this file (or torch).
"""
import math
import os
import sys

import torch
import torch.nn as nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (as nanoGPT; PyTorch's only has bias=True/False since 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout_p = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout_p if self.training else 0.0,
                                           is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """nanoGPT's GPT. `cfg` is any object with block_size, vocab_size, n_layer, n_head,
    n_embd, dropout, bias (our GPTConfig works)."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        """AdamW with two groups, as ours: decay on 2-D (and higher) weights, none on biases/LN."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=1e-8)


def torch_state_dict_from_ours(state):
    """{name: numpy array} from our GPT -> {name: torch tensor} for TorchGPT.load_state_dict.

    Our named_parameters yields the tied embedding once; whichever of wte/lm_head is
    missing is filled in with the other (they are the same tensor in TorchGPT).
    """
    import numpy as np
    out = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).clone() for k, v in state.items()}
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    if "transformer.wte.weight" not in out:
        out["transformer.wte.weight"] = out["lm_head.weight"]
    return out


def build_torch(config, state=None, device="cpu"):
    """A TorchGPT for `config`, with `state` (our numpy state dict) copied in if given."""
    model = TorchGPT(config)
    if state is not None:
        model.load_state_dict(torch_state_dict_from_ours(state), strict=True)
    return model.to(device)


def build_pair(config, seed=1337, device="cpu"):
    """(ours, torch): our GPT built after ng.manual_seed(seed), and a TorchGPT with its weights."""
    import nanograd as ng
    from gpt.model import GPT
    ng.manual_seed(seed)
    ours = GPT(config)
    state = {k: ng.backend.to_device(v, "cpu") for k, v in ours.state_dict().items()}
    theirs = build_torch(config, state, device)
    if device != "cpu":
        ours.to(device)
    return ours, theirs


def max_weight_diff(ours, theirs):
    """Largest |difference| between same-named parameters (0.0 right after build_pair)."""
    import nanograd as ng
    tsd = theirs.state_dict()
    return max(float(abs(ng.backend.to_device(v, "cpu") - tsd[k].detach().cpu().numpy()).max())
               for k, v in ours.state_dict().items())
