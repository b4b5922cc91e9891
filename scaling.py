"""A scaling sweep on the CPU: train a family of GPTs on the same data and budget, then compare them.

    python scaling.py                      # six sizes, ~12k to ~0.8M parameters, Shakespeare chars
    python scaling.py --quick=true         # a one-minute smoke test of the whole pipeline
    python scaling.py --iters=1000 --sizes=2x4x64,4x4x128
    python scaling.py --task=addition      # emergence and its mirage (configs/scaling_addition.toml)

Every model sees the same number of tokens (iters x batch_size x block_size), with the same
learning-rate schedule, through train.py's Trainer. N is the non-embedding parameter count
(Kaplan et al., 2020: embeddings excluded), compute is C = 6 N D in FLOPs. The fit searches
the irreducible loss c on a grid (refined around the best point) and, for each c, fits
log(L - c) = log a - alpha log N by least squares; the c with the smallest squared error in
L wins. A pure power law (c = 0) is fitted
too. Results go to out_dir/scaling.json, a markdown table scaling.md, and scaling.png
(log-log, if matplotlib is installed).

--task=addition trains the sizes on n-digit addition (gpt/tasks/addition.py) instead, reading
its settings from configs/scaling_addition.toml first (options given on the command line win),
and asks whether the ability "emerges" with scale (Wei et al., 2022) or only looks so through
the metric (Schaeffer et al., 2023): it writes results_dir/addition_scaling.json (per size:
n_params, exact_match, per_digit_accuracy, answer_loss, each answer position's accuracy and the
metrics at every evaluation), a table, addition_scaling.png (the three metrics against N, with
per_digit_accuracy^k over exact match, k the number of answer digits) and addition_training.png
(the largest model's metrics against iterations).

Left out: tuning the learning rate per size, fitting in D or C (Hoffmann et al.'s L(N, D)),
error bars over seeds for the fit (--seeds averages the addition runs only).
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
from gpt.inspect import pyplot, save
from gpt.rundir import check_writable
from gpt.safetensors import write_file, write_json
from gpt.tasks import read_evaluations
from gpt.tasks.addition import sequence_length

FULL_SIZES = "1x2x32,2x2x48,2x4x64,3x4x80,3x4x96,4x4x128"  # n_layer x n_head x n_embd
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
PRESETS = {"addition": os.path.join(CONFIGS, "scaling_addition.toml")}  # read before the command line
QUICK_SIZES = {"shakespeare": "1x2x16,1x2x24,1x2x32,2x2x32,2x2x48", "addition": "1x2x16,1x2x32"}


@dataclasses.dataclass
class ScalingConfig:
    task: str = option("shakespeare", "'shakespeare' (fit L(N) on text) or 'addition' (exact match against "
                                      "per-digit accuracy; reads configs/scaling_addition.toml)",
                       valid=("shakespeare", "addition"))
    out_dir: str = option("out-scaling", "directory for each run and scaling.json / .md / .png")
    results_dir: str = option("", "where the summary JSON, table and plots go ('': out_dir)")
    sizes: str = option(FULL_SIZES, "comma-separated n_layer x n_head x n_embd, smallest first")
    iters: int = option(600, "optimizer steps per model (the token budget is iters x batch_size x block_size)",
                        valid="[1, inf)")
    batch_size: int = option(16, "sequences per step", valid="[1, inf)")
    block_size: int = option(64, "context length (addition: its 3 n_digits + 2 tokens instead)", valid="[1, inf)")
    learning_rate: float = option(2e-3, "peak learning rate, the same for every size", valid="(0, inf)")
    eval_iters: int = option(40, "batches for the final train and val loss", valid="[1, inf)")
    eval_interval: int = option(0, "also evaluate every this many steps (0: only at the end)", valid="[0, inf)")
    quick: bool = option(False, "smoke test: 5 tiny sizes (2 for addition), 15 steps each")
    data_file: str = option("", "train on this text instead of the built-in Shakespeare")
    seed: int = option(1337, "seed for every run", valid="[0, inf)")
    seeds: int = option(1, "addition: train each size with seeds seed, seed + 1, ... and report their mean",
                        valid="[1, inf)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))
    # --task=addition (train.py's options of the same names)
    n_digits: int = option(3, "addition: digits per operand", valid="[1, 9]")
    reverse_answer: bool = option(True, "addition: the sum least significant digit first")
    val_problems: int = option(2000, "addition: held-out problems scored at each evaluation", valid="[1, inf)")

    def __post_init__(self):
        """--sizes must parse into at least three models for the fit, two to compare on addition
        (gpt.config.build checks the other ranges)."""
        sizes = parse_sizes(self.sizes)
        if self.task == "addition" and len(sizes) < 2 and not self.quick:
            raise ConfigError(f"--sizes has {len(sizes)} model: a comparison across sizes needs at least 2")
        if self.task == "shakespeare" and len(sizes) < 3 and not self.quick:
            raise ConfigError(f"--sizes has {len(sizes)} model(s); a three-parameter fit needs at least 3 "
                              "(5+ is sensible)")
        if self.task == "shakespeare" and self.seeds > 1:
            raise ConfigError(f"--seeds={self.seeds}: the L(N) fit uses one seed; several are for --task=addition")


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


def data_options(cfg):
    """train.py's options that choose the data: Shakespeare (or data_file), or the addition task."""
    if cfg.task == "addition":
        return dict(dataset="addition", n_digits=cfg.n_digits, reverse_answer=cfg.reverse_answer,
                    val_problems=cfg.val_problems, block_size=sequence_length(cfg.n_digits))
    return dict(data_file=cfg.data_file, block_size=cfg.block_size)


def train_one(cfg, size, iters, seed):
    """Train one size with train.py's Trainer; a dict of its size, tokens, compute, losses, the
    task's metrics at the last evaluation, every evaluation ("curve"), its directory and the time."""
    n_layer, n_head, n_embd = size
    name = f"L{n_layer}_H{n_head}_C{n_embd}" + ("" if seed == cfg.seed else f"_seed{seed}")
    run = train.TrainConfig(
        out_dir=os.path.join(cfg.out_dir, name), n_layer=n_layer, n_head=n_head,
        n_embd=n_embd, batch_size=cfg.batch_size, max_iters=iters, lr_decay_iters=iters,
        warmup_iters=max(1, iters // 10), eval_interval=cfg.eval_interval or iters, log_interval=max(1, iters // 4),
        eval_iters=cfg.eval_iters, learning_rate=cfg.learning_rate, min_lr=cfg.learning_rate / 10,
        seed=seed, device=cfg.device, **data_options(cfg))
    os.makedirs(run.out_dir, exist_ok=True)
    stale = os.path.join(run.out_dir, "metrics.jsonl")  # an earlier sweep's rows: train.py appends
    if os.path.exists(stale):
        os.remove(stale)
    start = time.time()
    trainer = train.Trainer(run)
    trainer.run()
    if trainer.iter_num < iters:  # Ctrl-C or SIGTERM stopped the run: stop the sweep too
        sys.exit(f"the sweep stopped during {name} at iteration {trainer.iter_num} of {iters}")
    model = trainer.model
    n = model.num_params() - model.transformer.wte.weight.size  # non-embedding (Kaplan)
    tokens = iters * trainer.tokens_per_iter
    seconds = round(time.time() - start, 1)
    curve = read_evaluations(run.out_dir)
    final = {k: v for k, v in curve[-1].items() if k != "iter"}  # the evaluation at `iters`
    return {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "params": n,
            "params_total": model.num_params(non_embedding=False), "tokens": tokens, "flops": 6 * n * tokens,
            **final, "seed": seed, "out_dir": run.out_dir, "seconds": seconds, "curve": curve}


def main(argv):
    cfg = parse(ScalingConfig, argv, "scaling.py")
    if cfg.task in PRESETS:  # the task's settings first, then the command line's
        cfg = parse(ScalingConfig, [PRESETS[cfg.task]] + argv, "scaling.py")
    sizes = parse_sizes(QUICK_SIZES[cfg.task] if cfg.quick else cfg.sizes)
    iters = 15 if cfg.quick else cfg.iters
    for option_name, path in (("--out_dir", cfg.out_dir), ("--results_dir", cfg.results_dir)):
        if path:
            check_writable(path, option_name)  # before any training, not at the first write
    os.makedirs(cfg.out_dir, exist_ok=True)
    results_dir = cfg.results_dir or cfg.out_dir
    os.makedirs(results_dir, exist_ok=True)
    load, start = os.getloadavg()[0], time.time()
    runs = [train_one(cfg, size, iters, seed) for size in sizes for seed in range(cfg.seed, cfg.seed + cfg.seeds)]
    sweep = {"seconds": round(time.time() - start, 1), "load_average_start": load, "load_average_end": os.getloadavg()[0]}
    if cfg.task == "addition":
        emergence_report(cfg, runs, sweep, results_dir)
    else:
        fit_report(cfg, runs, sweep, results_dir)


def fit_report(cfg, runs, sweep, results_dir):
    """Fit L(N) with and without an offset; write scaling.json, scaling.md and scaling.png."""
    a, alpha, c = fit_power_law([r["params"] for r in runs], [r["val_loss"] for r in runs])
    a0, alpha0, _ = fit_power_law([r["params"] for r in runs], [r["val_loss"] for r in runs], offset=False)
    result = {"config": dataclasses.asdict(cfg), "sweep": sweep, "runs": runs,
              "fit": {"a": a, "alpha": alpha, "c": c}, "fit_no_offset": {"a": a0, "alpha": alpha0}}
    write_results(results_dir, "scaling", result, markdown_table(runs, result),
                  [("scaling.png", lambda path: plot(runs, result, path))])


def write_results(results_dir, name, result, table, plots):
    """results_dir/name.json and name.md (the table, also printed), then each (file, plot function)."""
    write_json(os.path.join(results_dir, f"{name}.json"), result, indent=2)
    write_file(os.path.join(results_dir, f"{name}.md"), (table + "\n").encode("utf-8"))
    print(table)
    for filename, draw in plots:
        try:
            draw(os.path.join(results_dir, filename))
        except ModuleNotFoundError as e:
            print(f"no {filename}: {e}", file=sys.stderr)


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
    plt = pyplot()
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
    left.set_title("val loss against model size, with the fitted power law", fontsize=9)
    left.legend()
    right.loglog([r["flops"] for r in runs], loss, "o-", label="one model each (N given beside it)")
    for r, y in zip(runs, loss):
        right.annotate(f"N={r['params']:,}", (r["flops"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    right.set_xlabel("training compute C = 6ND (FLOPs)")
    right.set_ylabel("val loss (nats/token)")
    right.set_title("val loss against the compute spent training", fontsize=9)
    right.legend()
    for ax in (left, right):  # loss ticks as plain numbers (2.3), not powers of ten (2.3 x 10^0)
        ax.yaxis.set_major_formatter("{x:.2f}")
        ax.yaxis.set_minor_formatter("{x:.2f}")
    save(fig, path)


# ---- --task=addition: emergence and the mirage ---------------------------------------------------
def emergence_report(cfg, runs, sweep, results_dir):
    """addition_scaling.json / .md, addition_scaling.png (against N), addition_training.png (largest model)."""
    k = cfg.n_digits + 1  # answer digits
    records = [size_record([seed_record(r, k) for r in runs[i:i + cfg.seeds]])
               for i in range(0, len(runs), cfg.seeds)]
    result = {"config": dataclasses.asdict(cfg), "answer_digits": k, "sweep": sweep, "runs": records}
    write_results(results_dir, "addition_scaling", result, emergence_table(records, k, sweep),
                  [("addition_scaling.png", lambda path: plot_emergence(records, k, path)),
                   ("addition_training.png", lambda path: plot_training(records[-1]["seeds"][0], k, path))])


METRICS = ("exact_match", "per_digit_accuracy", "answer_loss", "power_k", "independent_digits")


def seed_record(run, k):
    """One run's held-out numbers at the end of training, and its metrics at every evaluation.

    digit_accuracy: each answer position's accuracy in written order (the task's addition.json);
    independent_digits: their product, the exact match if each position erred independently at
    its own rate; power_k: per_digit_accuracy^k, the same if every position had the mean rate.
    """
    with open(os.path.join(run["out_dir"], "addition.json")) as fh:
        positions = json.load(fh)["digit_accuracy"]
    return {"seed": run["seed"], "exact_match": run["exact_match"], "per_digit_accuracy": run["per_digit_accuracy"],
            "answer_loss": run["answer_loss"], "power_k": run["per_digit_accuracy"] ** k,
            "independent_digits": float(np.prod(positions)), "digit_accuracy": positions, "seconds": run["seconds"],
            "size": f"{run['n_layer']}x{run['n_head']}x{run['n_embd']}", "n_params": run["params"],
            "params_total": run["params_total"], "tokens": run["tokens"],
            "curve": [{key: row[key] for key in ("iter", "exact_match", "per_digit_accuracy", "answer_loss")}
                      for row in run["curve"]]}


def size_record(seeds):
    """One size's line of addition_scaling.json: its metrics averaged over seeds (the issue's four
    numbers first), each position's mean accuracy, the total time, and every seed's record."""
    first = seeds[0]
    mean = {m: float(np.mean([s[m] for s in seeds])) for m in METRICS}
    return {"size": first["size"], "n_params": first["n_params"], **mean,
            "digit_accuracy": np.mean([s["digit_accuracy"] for s in seeds], axis=0).tolist(),
            "params_total": first["params_total"], "tokens": first["tokens"],
            "seconds": round(sum(s["seconds"] for s in seeds), 1), "seeds": seeds}


def emergence_table(records, k, sweep):
    """The sizes as a markdown table (means over seeds; exact match of each seed too), and the
    sweep's wall time and load."""
    lines = [f"| layers x heads x width | N (non-emb.) | exact match | per-digit acc. | per-digit^{k} | "
             "product of positions | answer loss | accuracy by position | exact match by seed | time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['n_params']:,} | {r['exact_match']:.3f} | {r['per_digit_accuracy']:.3f} | "
              f"{r['power_k']:.3f} | {r['independent_digits']:.3f} | {r['answer_loss']:.3f} | "
              f"{' '.join(f'{p:.2f}' for p in r['digit_accuracy'])} | "
              f"{' '.join(f'{seed_exact:.2f}' for seed_exact in exact_by_seed(r))} | {r['seconds']:.0f} |" for r in records]
    lines += ["", f"sweep: {sweep['seconds'] / 60:.1f} minutes, load average {sweep['load_average_start']:.1f} "
                  f"at the start and {sweep['load_average_end']:.1f} at the end"]
    return "\n".join(lines)


def exact_by_seed(record):
    """Each seed's exact match at one size."""
    return [s["exact_match"] for s in record["seeds"]]


def plot_emergence(records, k, path):
    """Exact match (with per_digit^k and the product of positions over it), per-digit accuracy and
    answer loss, each against N on a log axis."""
    plt = pyplot()
    n = [r["n_params"] for r in records]
    fig, (exact, digit, loss) = plt.subplots(1, 3, figsize=(13, 4))
    exact.plot(n, [r["exact_match"] for r in records], "o-", label="exact match")
    if len(records[0]["seeds"]) > 1:
        exact.plot([r["n_params"] for r in records for _ in r["seeds"]],
                   [e for r in records for e in exact_by_seed(r)], ".", color="grey", label="each seed")
    exact.plot(n, [r["power_k"] for r in records], "s--", label=f"per-digit accuracy^{k}")
    exact.plot(n, [r["independent_digits"] for r in records], "x:", label="product of position accuracies")
    exact.set_title("exact match: the 'emergent' view")
    exact.legend(fontsize=8)
    digit.plot(n, [r["per_digit_accuracy"] for r in records], "o-", label="per-digit accuracy")
    digit.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance (0.1)")
    digit.set_title("per-digit accuracy: a smooth view")
    digit.legend(fontsize=8)
    loss.plot(n, [r["answer_loss"] for r in records], "o-")
    loss.set_yscale("log")
    loss.set_title("answer loss (nats/digit): a smooth view")
    for ax in (exact, digit, loss):
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
    for ax in (exact, digit):
        ax.set_ylim(-0.03, 1.03)
    save(fig, path)


def plot_training(record, k, path):
    """One model's exact match, per-digit accuracy and per_digit^k against training iterations."""
    plt = pyplot()
    it = [row["iter"] for row in record["curve"]]
    digit = np.array([row["per_digit_accuracy"] for row in record["curve"]])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(it, [row["exact_match"] for row in record["curve"]], "o-", label="exact match")
    ax.plot(it, digit, "o-", label="per-digit accuracy")
    ax.plot(it, digit ** k, "s--", label=f"per-digit accuracy^{k}")
    ax.set_xlabel("iteration")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{record['size']} ({record['n_params']:,} parameters) over training")
    ax.legend(fontsize=8)
    save(fig, path)


if __name__ == "__main__":
    run_main(main)
