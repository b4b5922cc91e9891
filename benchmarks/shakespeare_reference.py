"""The learning target: the same Shakespeare run as `python train.py`, trained by PyTorch.

    python benchmarks/shakespeare_reference.py              # configs/shakespeare_char_cpu.toml
    python benchmarks/shakespeare_reference.py --max_iters=500 --threads=1

Everything but the framework is train.py's own: the config (the TOML plus any --key=value
train.py accepts), the data (train.py's Trainer prepares the token files and its
TokenDataset serves the batches), the batch-sampling generator (default_rng(seed), one
get_batch per micro-batch, in the same order), the initial weights (our GPT built by
Trainer after ng.manual_seed(seed), copied into benchmarks/torch_gpt.TorchGPT), AdamW with
the same two groups, betas, weight decay and learning rate (nanograd.optim.cosine_schedule),
gradient clipping, and the evaluation protocol of Trainer.estimate_loss (eval_iters batches
per split from default_rng([seed, iter])). So the val loss printed at the last iteration
should match ours (`python train.py`) to within run-to-run float noise; the issue's
target is 0.03.

Before the torch run, ours and torch take --compare_iters steps side by side and print
both losses: they start from the same weights on the same batches, so they must agree
closely at first (float32 rounding differences then grow slowly).
The token files go to out-shakespeare-reference/ (not train.py's out dir).
"""
import os
import sys
import time


def _pop(argv, name, default):
    for a in list(argv):
        if a.startswith(f"--{name}="):
            argv.remove(a)
            return type(default)(a.split("=", 1)[1])
    return default


ARGV = sys.argv[1:]
THREADS = _pop(ARGV, "threads", 2)
COMPARE_ITERS = _pop(ARGV, "compare_iters", 10)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)  # before numpy/torch are imported
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from gpt.extras import require  # noqa: E402

torch = require("torch", "bench", "benchmarks/shakespeare_reference.py")

import nanograd as ng  # noqa: E402
import train  # noqa: E402  (train.py at the repo root: TrainConfig, Trainer)
from gpt.config import parse  # noqa: E402
from torch_gpt import build_torch  # noqa: E402

torch.set_num_threads(THREADS)
try:
    from threadpoolctl import threadpool_limits
    threadpool_limits(THREADS)
except ImportError:
    pass


class TorchRun:
    """train.py's loop and evaluation, with the model and optimizer in PyTorch."""

    def __init__(self, cfg, data, model):
        self.cfg, self.data, self.model = cfg, data, model
        self.block_size = model.config.block_size
        self.optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
        self.rng = np.random.default_rng(cfg.seed)  # batch sampling, as Trainer.rng
        self.iter_num = 0

    def lr_at(self, it):
        c = self.cfg
        return ng.optim.cosine_schedule(it, c.learning_rate, c.min_lr, c.warmup_iters, c.lr_decay_iters) \
            if c.decay_lr else c.learning_rate

    def batch(self, split, rng):
        x, y = self.data.get_batch(split, self.cfg.batch_size, self.block_size, rng)
        return torch.from_numpy(np.asarray(x, dtype=np.int64)), torch.from_numpy(np.asarray(y, dtype=np.int64))

    @torch.no_grad()
    def estimate_loss(self):
        self.model.eval()
        rng = np.random.default_rng([self.cfg.seed, self.iter_num])
        out = {split: float(np.mean([self.model(*self.batch(split, rng))[1].item()
                                     for _ in range(self.cfg.eval_iters)])) for split in ("train", "val")}
        self.model.train()
        return out

    def train_step(self):
        cfg = self.cfg
        lr = self.lr_at(self.iter_num)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for _ in range(cfg.gradient_accumulation_steps):
            _, loss = self.model(*self.batch("train", self.rng))
            loss = loss / cfg.gradient_accumulation_steps
            loss.backward()
            total += loss.item()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter_num += 1
        return total


def main():
    argv = ARGV if any(a.endswith(".toml") for a in ARGV) else [train.DEFAULT_CONFIG] + ARGV
    if not any(a.startswith("--out_dir=") for a in argv):
        argv.append("--out_dir=" + os.path.join(ROOT, "out-shakespeare-reference"))
    cfg = parse(train.TrainConfig, argv, "shakespeare_reference.py")
    if cfg.init_from != "scratch":
        raise SystemExit("shakespeare_reference.py trains from scratch only")
    os.makedirs(cfg.out_dir, exist_ok=True)
    ours = train.Trainer(cfg)  # prepares the data, seeds, builds our GPT: the weights to copy
    state = {k: ng.backend.to_device(v, "cpu") for k, v in ours.model.state_dict().items()}
    ref = TorchRun(cfg, ours.data, build_torch(ours.model.config, state))
    print(f"torch reference: {THREADS} threads, {cfg.max_iters} iterations, batch {cfg.batch_size}, "
          f"block {cfg.block_size}, lr {cfg.learning_rate} (cosine to {cfg.min_lr}), betas ({cfg.beta1}, "
          f"{cfg.beta2}), weight decay {cfg.weight_decay}, grad clip {cfg.grad_clip}, seed {cfg.seed}")

    if COMPARE_ITERS:  # same weights, same batches: the two losses agree at first
        twin = TorchRun(cfg, ours.data, build_torch(ours.model.config, state))
        diffs = []
        for i in range(COMPARE_ITERS):
            l_ours, _ = ours.train_step()
            l_torch = twin.train_step()
            ours.iter_num += 1
            diffs.append(abs(l_ours - l_torch))
            if i < 3 or i == COMPARE_ITERS - 1:
                print(f"  side by side, iter {i}: ours {l_ours:.6f}, torch {l_torch:.6f}")
        print(f"side by side for {COMPARE_ITERS} iterations: max |loss difference| {max(diffs):.2e}")
        del twin

    t0 = time.time()
    while True:
        if ref.iter_num % cfg.eval_interval == 0 or ref.iter_num == cfg.max_iters:
            losses = ref.estimate_loss()
            print(f"step {ref.iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
        if ref.iter_num >= cfg.max_iters:
            break
        loss = ref.train_step()
        if ref.iter_num % cfg.log_interval == 0:
            print(f"iter {ref.iter_num}: loss {loss:.4f}", flush=True)
    print(f"torch reference: val loss {losses['val']:.4f} at iteration {ref.iter_num} "
          f"({time.time() - t0:.0f}s); compare with `python train.py` (target: within 0.03)")


if __name__ == "__main__":
    main()
