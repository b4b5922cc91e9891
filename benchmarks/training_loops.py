"""The training loops the speed benchmarks time: ours, PyTorch's, and train.py's own.

    from training_loops import CONFIGS, model_config, make_batches, PlainLoop, TorchLoop, TrainPyLoop

A loop has `step(x, y)` (forward, backward, clip at 1.0, AdamW, zero_grad; returns the loss)
and `loss(x, y)` (no grad). `PlainLoop` uses nanograd's public API only, as a reader's own
notebook would: no allocator or threading call. `TrainPyLoop` is train.py's `Trainer` on the
built-in Shakespeare text with the config's sizes; its step is `Trainer.train_step()`, which
draws its own batch. Imports of numpy, nanograd and torch happen inside the functions, so
a script can set thread counts after importing this, and a child process that times one
framework loads only that one.

Left out: dropout (0 everywhere, so both frameworks compute the same function), CUDA for TrainPyLoop.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {  # n_layer, n_head, n_embd, block_size, batch_size, vocab_size, default steps/round
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, vocab_size=65, steps=20),
    "char6": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8, vocab_size=65, steps=3),
    "gpt2s": dict(n_layer=12, n_head=12, n_embd=768, block_size=128, batch_size=2, vocab_size=50257, steps=2),
}
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP, SEED = 1e-3, (0.9, 0.99), 0.1, 1.0, 1337


def tokens_per_step(name):
    return CONFIGS[name]["batch_size"] * CONFIGS[name]["block_size"]


def model_config(name):
    from gpt.model import GPTConfig
    c = CONFIGS[name]
    return GPTConfig(block_size=c["block_size"], vocab_size=c["vocab_size"], n_layer=c["n_layer"],
                     n_head=c["n_head"], n_embd=c["n_embd"], dropout=0.0, bias=True)


def make_batches(name, n=4, seed=0):
    """n fixed (x, y) int64 batches of random tokens, each (batch_size, block_size); y is x shifted by one."""
    import numpy as np
    c = CONFIGS[name]
    rng = np.random.default_rng(seed)
    seqs = rng.integers(0, c["vocab_size"], (n, c["batch_size"], c["block_size"] + 1), dtype=np.int64)
    return [(s[:, :-1].copy(), s[:, 1:].copy()) for s in seqs]


def our_model(name, device="cpu"):
    """Our GPT for config `name`, built after ng.manual_seed(SEED)."""
    import nanograd as ng
    from gpt.model import GPT
    ng.manual_seed(SEED)
    return GPT(model_config(name)).to(device)


def torch_model(name, device="cpu"):
    """A TorchGPT for config `name` (torch's own init)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_gpt import build_torch
    return build_torch(model_config(name), device=device)


class PlainLoop:
    """A reader's own loop over our GPT: model, loss, backward, clipping, AdamW, zero_grad, nothing else."""

    def __init__(self, model, device="cpu"):
        import nanograd as ng
        self.ng, self.model, self.device = ng, model, device
        self.opt = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS)

    def loss(self, x, y):
        with self.ng.no_grad():
            return self.model(self.ng.Tensor(x, device=self.device), self.ng.Tensor(y, device=self.device))[1].item()

    def step(self, x, y):
        ng = self.ng
        _, loss = self.model(ng.Tensor(x, device=self.device), ng.Tensor(y, device=self.device))
        loss.backward()
        ng.optim.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        self.opt.zero_grad()
        return loss.item()  # waits for the device


class TorchLoop:
    """The same loop in PyTorch (zero_grad(set_to_none=True), as ours drops its gradients)."""

    def __init__(self, model, device="cpu"):
        import torch
        self.torch, self.model, self.device = torch, model, device
        self.opt = model.configure_optimizers(WEIGHT_DECAY, LR, BETAS)

    def loss(self, x, y):
        t = self.torch
        with t.no_grad():
            return self.model(t.from_numpy(x).to(self.device), t.from_numpy(y).to(self.device))[1].item()

    def step(self, x, y):
        t = self.torch
        _, loss = self.model(t.from_numpy(x).to(self.device), t.from_numpy(y).to(self.device))
        loss.backward()
        t.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


class TrainPyLoop:
    """train.py's Trainer with config `name`'s sizes on the built-in Shakespeare text (a char
    tokenizer: vocabulary 65, as the configs), writing its token files to out_dir."""

    def __init__(self, name, out_dir):
        sys.path.insert(0, ROOT)
        import contextlib
        import io
        from gpt.config import parse
        from train import DEFAULT_CONFIG, TrainConfig, Trainer
        c = CONFIGS[name]
        sizes = {k: c[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")}
        argv = [DEFAULT_CONFIG, f"--out_dir={out_dir}", "--dropout=0.0", f"--learning_rate={LR}",
                f"--weight_decay={WEIGHT_DECAY}", f"--grad_clip={GRAD_CLIP}", f"--seed={SEED}",
                *(f"--{k}={v}" for k, v in sizes.items())]
        with contextlib.redirect_stdout(io.StringIO()):  # its "model: ... parameters" line
            self.trainer = Trainer(parse(TrainConfig, argv, "train.py"))

    def step(self, *_):
        """One train_step(); it draws its own batch as train.py does, so (x, y) go unused."""
        return self.trainer.train_step()[0]
