"""Training speed and memory: our GPT (nanograd on NumPy) against the same GPT in PyTorch.

    python benchmarks/train_speed.py                      # --config all, 2 threads, CPU
    python benchmarks/train_speed.py --config char6 --steps 5 --rounds 3
    python benchmarks/train_speed.py --config gpt2s --profile   # cProfile of our step
    python benchmarks/train_speed.py --device cuda        # CuPy against torch CUDA
    python benchmarks/train_speed.py --config char6 --loops-only  # a plain loop against train.py's

Both models get the same config, the same initial weights (ours built with a fixed seed,
copied into torch), the same random token batches, float32, dropout 0, AdamW (two groups,
decay on 2-D weights), gradient clipping at 1.0, and the same number of threads. A step is
forward + backward + clip + AdamW + zero_grad. In one process the two run alternately,
`--rounds` rounds of `--steps` steps each after warmup (the order flips every round), and
tokens/s is the best round (other work on the machine only ever slows a round down; the
median-round ratio is printed too). Before timing, the first-step loss of both is printed
(identical weights and data, so they must agree to ~1e-5).

A plain loop (training_loops.PlainLoop: the public API only, no allocator or threading
call) is timed against train.py's own loop (its Trainer.train_step) too, each in its own
child process, alternating, `--rounds` times each: the best rounds' ratio is the
"plain/train.py" column.

Peak memory is measured separately: one child process per framework imports only that
framework, builds the model and runs the training steps; its peak RSS (/proc/self/status
VmHWM, including the libraries themselves) is reported raw, next to the RSS right
after the imports. The children also report their own tokens/s, a check that running
alternately in one process did not bias the comparison.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from training_loops import CONFIGS, SEED, PlainLoop, TorchLoop, TrainPyLoop, make_batches, model_config


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="all", choices=[*CONFIGS, "all"])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default: per config)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per framework")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per framework first")
    ap.add_argument("--threads", type=int, default=2, help="threads for BLAS/OpenMP (both frameworks)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--no-loops", action="store_true", help="skip the plain loop against train.py's loop")
    ap.add_argument("--loops-only", action="store_true", help="only the plain loop against train.py's loop")
    ap.add_argument("--profile", action="store_true", help="cProfile our training step instead of comparing")
    ap.add_argument("--child", choices=["ours", "torch", "plain", "trainpy"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


ARGS = parse_args(sys.argv[1:])
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NANOGRAD_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)  # before numpy/torch are imported; children inherit them

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

from gpt.extras import require  # noqa: E402

def rss_mb():
    """Peak resident set size of this process so far, in MiB.

    /proc/self/status VmHWM where it exists: unlike getrusage's ru_maxrss, it starts
    afresh at exec, so a child started by a big parent does not inherit the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024


def limit_threads(n):
    """Pin NumPy's BLAS to n threads (threadpoolctl when installed; the env vars otherwise)."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass


def our_loop(model, device):
    """PlainLoop with our kernels on ARGS.threads threads, as many as torch's."""
    import nanograd as ng
    ng.parallel.set_num_threads(ARGS.threads)
    return PlainLoop(model, device)


def run_steps(trainer, batches, n, start=0):
    t0 = time.perf_counter()
    for i in range(n):
        trainer.step(*batches[(start + i) % len(batches)])
    return time.perf_counter() - t0


def init_torch(threads):
    torch = require("torch", "bench", "benchmarks/train_speed.py")
    torch.set_num_threads(threads)
    return torch


# ---- one framework alone, in a child process: peak memory ------------------------------
def child(which, name, steps, warmup, device):
    out_dir = tempfile.mkdtemp(prefix="train_speed_")  # train.py's token files
    try:
        measure_alone(which, name, steps, warmup, device, out_dir)
    finally:
        shutil.rmtree(out_dir)


def measure_alone(which, name, steps, warmup, device, out_dir):
    limit_threads(ARGS.threads)
    cfg = model_config(name)
    if which == "torch":
        init_torch(ARGS.threads)
        from torch_gpt import TorchGPT
        base = rss_mb()
        trainer = TorchLoop(TorchGPT(cfg).to(device), device)
    elif which == "trainpy":
        base = rss_mb()
        trainer = TrainPyLoop(name, out_dir)
    else:
        import nanograd as ng
        from gpt.model import GPT
        base = rss_mb()
        ng.manual_seed(SEED)
        model = GPT(cfg).to(device)
        trainer = PlainLoop(model, device) if which == "plain" else our_loop(model, device)
    batches = make_batches(name)
    run_steps(trainer, batches, warmup)
    dt = run_steps(trainer, batches, steps, warmup)
    c = CONFIGS[name]
    out = {"peak_rss_mb": rss_mb(), "import_rss_mb": base,
           "tok_s": steps * c["batch_size"] * c["block_size"] / dt}
    if device == "cuda":
        if which == "torch":
            import torch
            out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            import cupy
            out["gpu_peak_mb"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    print("RESULT " + json.dumps(out))


def measure_child(which, name, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--config", name, "--steps", str(steps),
           "--warmup", str(ARGS.warmup), "--threads", str(ARGS.threads), "--device", ARGS.device]
    res = subprocess.run(cmd, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {which} {name} failed:\n{res.stdout}\n{res.stderr}")


# ---- both in one process: speed --------------------------------------------------------
def compare(name):
    init_torch(ARGS.threads)
    limit_threads(ARGS.threads)
    from torch_gpt import build_pair, max_weight_diff
    c, device = CONFIGS[name], ARGS.device
    steps = ARGS.steps or c["steps"]
    tokens = c["batch_size"] * c["block_size"]
    ours_model, torch_model = build_pair(model_config(name), SEED, device)
    n_params = sum(p.numel() for p in torch_model.parameters())
    print(f"\n== {name}: {c['n_layer']} layers, {c['n_head']} heads, {c['n_embd']} wide, block {c['block_size']}, "
          f"batch {c['batch_size']}, vocab {c['vocab_size']}, {n_params / 1e6:.2f}M params, {tokens} tokens/step, "
          f"{ARGS.threads} threads, {device}")
    ours, theirs = our_loop(ours_model, device), TorchLoop(torch_model, device)
    batches = make_batches(name)

    # sanity: the same function (weights copied, same batch)
    assert max_weight_diff(ours_model, torch_model) == 0.0
    l_ours, l_torch = ours.step(*batches[0]), theirs.step(*batches[0])
    l2_ours, l2_torch = ours.loss(*batches[1]), theirs.loss(*batches[1])
    print(f"first-step loss: ours {l_ours:.6f}, torch {l_torch:.6f}, |diff| {abs(l_ours - l_torch):.2e}; "
          f"after one AdamW step: ours {l2_ours:.6f}, torch {l2_torch:.6f}, |diff| {abs(l2_ours - l2_torch):.2e}")

    run_steps(ours, batches, ARGS.warmup, 1)
    run_steps(theirs, batches, ARGS.warmup, 1)
    rates = {"ours": [], "torch": []}
    for r in range(ARGS.rounds):
        order = [("ours", ours), ("torch", theirs)][:: 1 if r % 2 == 0 else -1]
        for label, tr in order:
            rates[label].append(steps * tokens / run_steps(tr, batches, steps, r * steps))
    best = {k: max(v) for k, v in rates.items()}
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"tokens/s over {ARGS.rounds} rounds of {steps} steps: "
          f"ours {[round(v) for v in rates['ours']]}, torch {[round(v) for v in rates['torch']]} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"best round: ours {best['ours']:.0f} tok/s ({tokens / best['ours'] * 1000:.0f} ms/step), "
          f"torch {best['torch']:.0f} tok/s ({tokens / best['torch'] * 1000:.0f} ms/step), "
          f"ratio ours/torch {best['ours'] / best['torch']:.2f}; "
          f"median round ratio {med['ours'] / med['torch']:.2f}")
    row = {"config": name, "ours_tok_s": best["ours"], "torch_tok_s": best["torch"],
           "ratio": best["ours"] / best["torch"], "median_ratio": med["ours"] / med["torch"],
           "loss_diff": abs(l_ours - l_torch)}
    del ours, theirs, ours_model, torch_model

    if not ARGS.no_memory:
        mem = {w: measure_child(w, name, min(steps, 3)) for w in ("ours", "torch")}
        for w, m in mem.items():
            gpu = f", GPU peak {m['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in m else ""
            print(f"alone in a child: {w:5s} peak RSS {m['peak_rss_mb']:.0f} MB (after imports "
                  f"{m['import_rss_mb']:.0f} MB), {m['tok_s']:.0f} tok/s{gpu}")
        print(f"peak RSS ratio ours/torch {mem['ours']['peak_rss_mb'] / mem['torch']['peak_rss_mb']:.2f}")
        row.update(ours_rss_mb=mem["ours"]["peak_rss_mb"], torch_rss_mb=mem["torch"]["peak_rss_mb"],
                   ours_alone_tok_s=mem["ours"]["tok_s"], torch_alone_tok_s=mem["torch"]["tok_s"])
    if not ARGS.no_loops and device == "cpu":
        row.update(plain_vs_trainpy(name, steps))
    return row


def plain_vs_trainpy(name, steps):
    """tokens/s of a plain loop and of train.py's loop, each in child processes, alternating."""
    rates = {"plain": [], "trainpy": []}
    for r in range(ARGS.rounds):
        for which in ("plain", "trainpy")[:: 1 if r % 2 == 0 else -1]:
            rates[which].append(measure_child(which, name, steps)["tok_s"])
    best = {k: max(v) for k, v in rates.items()}
    print(f"separate processes, {ARGS.rounds} rounds of {steps} steps: plain loop {[round(v) for v in rates['plain']]}, "
          f"train.py's loop {[round(v) for v in rates['trainpy']]} tok/s; best rounds' ratio plain/train.py "
          f"{best['plain'] / best['trainpy']:.2f} (load average {os.getloadavg()[0]:.1f})")
    return {"plain_tok_s": best["plain"], "trainpy_tok_s": best["trainpy"], "plain_ratio": best["plain"] / best["trainpy"]}


def profile(name):
    """cProfile of our training steps only (sorted by tottime)."""
    import cProfile
    import pstats
    limit_threads(ARGS.threads)
    import nanograd as ng
    from gpt.model import GPT
    ng.manual_seed(SEED)
    trainer = our_loop(GPT(model_config(name)).to(ARGS.device), ARGS.device)
    batches = make_batches(name)
    run_steps(trainer, batches, ARGS.warmup)
    steps = ARGS.steps or CONFIGS[name]["steps"]
    prof = cProfile.Profile()
    prof.enable()
    dt = run_steps(trainer, batches, steps)
    prof.disable()
    print(f"\n== profile {name}: {steps} steps, {dt / steps * 1000:.0f} ms/step (under cProfile)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main():
    if ARGS.device == "cuda":
        import nanograd as ng
        ng.backend.check_device("cuda")
    if ARGS.child:
        return child(ARGS.child, ARGS.config, ARGS.steps, ARGS.warmup, ARGS.device)
    names = list(CONFIGS) if ARGS.config == "all" else [ARGS.config]
    if ARGS.profile:
        for name in names:
            profile(name)
        return
    try:
        from threadpoolctl import threadpool_info
        print("numpy BLAS:", [(i["internal_api"], i["num_threads"]) for i in threadpool_info()])
    except ImportError:
        pass
    if ARGS.loops_only:
        for name in names:
            plain_vs_trainpy(name, ARGS.steps or CONFIGS[name]["steps"])
        return
    rows = [compare(name) for name in names]
    print("\nconfig   ours tok/s  torch tok/s  ours/torch  plain/train.py  peak RSS ours  torch  ratio   (best rounds)")
    for r in rows:
        mem = (f"{r['ours_rss_mb']:9.0f} MB {r['torch_rss_mb']:5.0f} MB {r['ours_rss_mb'] / r['torch_rss_mb']:6.2f}"
               if "ours_rss_mb" in r else "")
        plain = f"{r['plain_ratio']:14.2f}" if "plain_ratio" in r else " " * 14
        print(f"{r['config']:7s} {r['ours_tok_s']:11.0f} {r['torch_tok_s']:12.0f} {r['ratio']:11.2f}  {plain}  {mem}")


if __name__ == "__main__":
    main()
