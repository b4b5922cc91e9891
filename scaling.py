"""A scaling-law sweep on the CPU: train a family of GPTs on the same tokens, fit L(N) = a N^-alpha + c.

    python scaling.py                      # six sizes, ~12k to ~0.8M parameters, Shakespeare chars
    python scaling.py --quick=true         # a one-minute smoke test of the whole pipeline
    python scaling.py --iters=1000 --sizes=2x4x64,4x4x128

Every model sees the same number of tokens (iters x batch_size x block_size), with the same
learning-rate schedule, through train.py's Trainer. N is the non-embedding parameter count
(Kaplan et al., 2020: embeddings excluded), compute is C = 6 N D in FLOPs. The fit searches
the irreducible loss c on a grid (refined around the best point) and, for each c, fits
log(L - c) = log a - alpha log N by least squares; the c with the smallest squared error in
L wins. A pure power law (c = 0) is fitted
too. Results go to out_dir/scaling.json, a markdown table scaling.md, and scaling.png
(log-log, if matplotlib is installed).

Left out: tuning the learning rate per size, fitting in D or C (Hoffmann et al.'s L(N, D)),
error bars over seeds.
"""
import dataclasses
import json
import os
import sys
import time

import numpy as np

import train
from gpt.cli import run_main
from gpt.config import ConfigError, option, parse

FULL_SIZES = "1x2x32,2x2x48,2x4x64,3x4x80,3x4x96,4x4x128"  # n_layer x n_head x n_embd


@dataclasses.dataclass
class ScalingConfig:
    out_dir: str = option("out-scaling", "directory for each run and scaling.json / .md / .png")
    sizes: str = option(FULL_SIZES, "comma-separated n_layer x n_head x n_embd, smallest first")
    iters: int = option(600, "optimizer steps per model (the token budget is iters x batch_size x block_size)",
                        valid="[1, inf)")
    batch_size: int = option(16, "sequences per step", valid="[1, inf)")
    block_size: int = option(64, "context length", valid="[1, inf)")
    learning_rate: float = option(2e-3, "peak learning rate, the same for every size", valid="(0, inf)")
    eval_iters: int = option(40, "batches for the final train and val loss", valid="[1, inf)")
    quick: bool = option(False, "smoke test: 5 tiny sizes, 15 steps each")
    data_file: str = option("", "train on this text instead of the built-in Shakespeare")
    seed: int = option(1337, "seed for every run", valid="[0, inf)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))

    def __post_init__(self):
        """--sizes must parse into at least three models (gpt.config.build checks the other ranges)."""
        sizes = parse_sizes(self.sizes)
        if len(sizes) < 3 and not self.quick:
            raise ConfigError(f"--sizes has {len(sizes)} model(s); a three-parameter fit needs at least 3 "
                              "(5+ is sensible)")


def parse_sizes(text):
    """[(n_layer, n_head, n_embd)] from '1x2x32,2x2x48'."""
    try:
        sizes = [tuple(int(v) for v in item.split("x")) for item in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 3 or min(s) < 1 or s[2] % s[1] for s in sizes):
        raise ConfigError(f"--sizes={text!r}: write n_layer x n_head x n_embd (positive, n_embd a multiple of "
                          "n_head), comma-separated, e.g. 1x2x32,2x4x64")
    return sizes


def fit_power_law(n, loss, offset=True, grid=100, rounds=5):
    """(a, alpha, c) minimising sum (a n^-alpha + c - loss)^2, with c in [0, min(loss)).

    For a given c the best a and alpha come from a line fit of log(loss - c) against log n.
    c is searched on a grid, then `rounds` times on a finer grid around the best point.
    offset=False fixes c = 0 (a pure power law).
    """
    n, loss = np.log(np.asarray(n, dtype=np.float64)), np.asarray(loss, dtype=np.float64)
    def fit_at(c):  # (squared error, a, alpha, c)
        slope, intercept = np.polyfit(n, np.log(loss - c), 1)
        return float(np.sum((np.exp(intercept + slope * n) + c - loss) ** 2)), float(np.exp(intercept)), -slope, c
    if not offset:
        return fit_at(0.0)[1:]
    lo, hi = 0.0, loss.min()
    for _ in range(rounds):
        best = min(fit_at(c) for c in np.linspace(lo, hi, grid, endpoint=False))
        step = (hi - lo) / grid
        lo, hi = max(0.0, best[3] - step), min(loss.min(), best[3] + step)
    return best[1:]


def train_one(cfg, size, iters):
    """Train one size with train.py's Trainer; a dict of its size, tokens, compute, losses and time."""
    n_layer, n_head, n_embd = size
    run = train.TrainConfig(
        out_dir=os.path.join(cfg.out_dir, f"L{n_layer}_H{n_head}_C{n_embd}"), n_layer=n_layer, n_head=n_head,
        n_embd=n_embd, block_size=cfg.block_size, batch_size=cfg.batch_size, max_iters=iters,
        lr_decay_iters=iters, warmup_iters=max(1, iters // 10), eval_interval=iters, log_interval=max(1, iters // 4),
        eval_iters=cfg.eval_iters, learning_rate=cfg.learning_rate, min_lr=cfg.learning_rate / 10,
        data_file=cfg.data_file, seed=cfg.seed, device=cfg.device)
    os.makedirs(run.out_dir, exist_ok=True)
    start = time.time()
    trainer = train.Trainer(run)
    trainer.run()
    model = trainer.model
    n = model.num_params() - model.transformer.wte.weight.size  # non-embedding (Kaplan)
    tokens = iters * trainer.tokens_per_iter
    with open(os.path.join(run.out_dir, "metrics.jsonl")) as fh:
        final = [row for row in map(json.loads, fh) if "val_loss" in row][-1]  # the evaluation at `iters`
    return {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "params": n,
            "params_total": model.num_params(non_embedding=False), "tokens": tokens, "flops": 6 * n * tokens,
            "train_loss": final["train_loss"], "val_loss": final["val_loss"], "seconds": round(time.time() - start, 1)}


def main(argv):
    cfg = parse(ScalingConfig, argv, "scaling.py")
    sizes = parse_sizes("1x2x16,1x2x24,1x2x32,2x2x32,2x2x48" if cfg.quick else cfg.sizes)
    iters = 15 if cfg.quick else cfg.iters
    os.makedirs(cfg.out_dir, exist_ok=True)
    runs = [train_one(cfg, size, iters) for size in sizes]
    a, alpha, c = fit_power_law([r["params"] for r in runs], [r["val_loss"] for r in runs])
    a0, alpha0, _ = fit_power_law([r["params"] for r in runs], [r["val_loss"] for r in runs], offset=False)
    result = {"config": dataclasses.asdict(cfg), "runs": runs,
              "fit": {"a": a, "alpha": alpha, "c": c}, "fit_no_offset": {"a": a0, "alpha": alpha0}}
    with open(os.path.join(cfg.out_dir, "scaling.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    table = markdown_table(runs, result)
    with open(os.path.join(cfg.out_dir, "scaling.md"), "w") as fh:
        fh.write(table + "\n")
    print(table)
    try:
        plot(runs, result, os.path.join(cfg.out_dir, "scaling.png"))
    except ModuleNotFoundError:
        print("(no scaling.png: pip install matplotlib for the plot)", file=sys.stderr)


def markdown_table(runs, result):
    """The runs and both fits as a markdown table plus two lines."""
    lines = ["| layers x heads x width | N (non-emb.) | tokens D | C = 6ND (FLOPs) | val loss | time (s) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['n_layer']}x{r['n_head']}x{r['n_embd']} | {r['params']:,} | {r['tokens']:,} | "
              f"{r['flops']:.2e} | {r['val_loss']:.4f} | {r['seconds']:.0f} |" for r in runs]
    f, f0 = result["fit"], result["fit_no_offset"]
    lines += ["", f"fit: L(N) = {f['a']:.3g} N^-{f['alpha']:.3f} + {f['c']:.3f}",
              f"pure power law (c = 0): L(N) = {f0['a']:.3g} N^-{f0['alpha']:.3f}"]
    return "\n".join(lines)


def plot(runs, result, path):
    """Val loss against N on log-log axes with the fitted curve; loss against compute beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = np.array([r["params"] for r in runs], dtype=float)
    loss = np.array([r["val_loss"] for r in runs])
    f = result["fit"]
    grid = np.logspace(np.log10(n.min()) - 0.2, np.log10(n.max()) + 0.2, 100)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(n, loss, "o", label="val loss")
    left.loglog(grid, f["a"] * grid ** -f["alpha"] + f["c"],
                label=f"{f['a']:.3g} N^-{f['alpha']:.3f} + {f['c']:.3f}")
    left.set_xlabel("non-embedding parameters N")
    left.set_ylabel("val loss (nats/token)")
    left.legend()
    right.loglog([r["flops"] for r in runs], loss, "o-")
    right.set_xlabel("training compute C = 6ND (FLOPs)")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
