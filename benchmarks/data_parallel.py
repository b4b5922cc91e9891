"""Data-parallel speed on one machine: 1 process x 2 threads, 1 x 1 and 2 processes x 1 (mpiexec).

    python benchmarks/data_parallel.py                       # char6, 4 rounds of 3 steps
    python benchmarks/data_parallel.py --rounds 6 --json docs/data_parallel.json

Each setting runs train.py's own training step (Trainer.train_step: draw the micro-batches,
forward and backward on this rank's share, the loss gather, the bucketed gradient all-reduce,
clipping, AdamW) on the char6 model of benchmarks/train_speed.py (6 layers, 6 heads, 384 wide,
block 256, batch 8), dropout 0, with gradient_accumulation_steps=2: one iteration is 2 x 8 x 256
= 4096 tokens in every setting, and under mpiexec each rank runs one of the two micro-batches.

Every (round, setting) is a fresh child process (or mpiexec job) that builds the model, runs
one untimed step and then --steps timed ones. The three settings take turns within a round,
in an order that rotates from round to round, so load from other work on the machine falls on
all of them alike; the ratios are taken within a round and their median and range reported.
For the 2-process runs the all-reduce's share of the step is the time rank 0 spends in the
MPI_Allreduce calls (which includes waiting for the other rank) over the step time.

Every process runs at the nice level --nice (default 10) from its start: the parent sets it
and the children, mpiexec's ranks included, inherit it. On a shared machine where something
renices other people's processes a few seconds after they start,
a setting whose processes escape it would otherwise get more of the CPU than another's.

A last mpiexec job times MPI_Allreduce alone on float32 buffers of 4 KB to 32 MB and fits the
latency-bandwidth model t(n) = a + b n (docs/distributed.md uses it).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {  # name: (processes, threads per process)
    "1x2": (1, 2),
    "1x1": (1, 1),
    "2x1": (2, 1),
}
CHAR6 = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8)  # as benchmarks/train_speed.py
MICRO_BATCHES = 2


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds; each runs every setting once")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per run")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--nice", type=int, default=10, help="nice level of every process (inherited by the children)")
    ap.add_argument("--child", choices=["train", "allreduce"], help=argparse.SUPPRESS)
    ap.add_argument("--out_dir", help=argparse.SUPPRESS)
    ap.add_argument("--data_file", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- inside a child (one rank) ------------------------------------------------------------------
def child_train(args):
    """Build train.py's Trainer on char6 and time --steps of its train_step; rank 0 prints RESULT."""
    sys.path.insert(0, ROOT)
    import train
    from nanograd import distributed
    world = distributed.init("cpu", MICRO_BATCHES)
    cfg = train.TrainConfig(out_dir=args.out_dir, data_file=args.data_file, dropout=0.0, bias=True,
                            gradient_accumulation_steps=MICRO_BATCHES, warmup_iters=10, lr_decay_iters=1000,
                            **CHAR6)
    trainer = train.Trainer(cfg, world)
    trainer.train_step()  # warm-up: first-touch of every buffer
    reduce_before = world.buckets.seconds if world.buckets else 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    seconds = time.perf_counter() - start
    reduce_seconds = (world.buckets.seconds if world.buckets else 0.0) - reduce_before
    if world.is_main:
        print("RESULT " + json.dumps({
            "tok_s": args.steps * trainer.tokens_per_iter / seconds, "step_s": seconds / args.steps,
            "allreduce_s": reduce_seconds / args.steps,
            "bucket_bytes": world.buckets.bytes_per_call if world.buckets else []}), flush=True)


def child_allreduce():
    """Time MPI_Allreduce of float32 buffers (4 KB .. 32 MB) between 2 ranks; fit t = a + b n."""
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 32 << 20]:
        buf = np.ones(nbytes // 4, np.float32)
        repeats = max(3, min(200, (64 << 20) // nbytes))
        comm.Allreduce(MPI.IN_PLACE, buf)
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(repeats):
            comm.Allreduce(MPI.IN_PLACE, buf)
        rows.append((nbytes, (time.perf_counter() - start) / repeats))
    n, t = np.array(rows, dtype=np.float64).T
    b, a = np.polyfit(n, t, 1)  # t = a + b n
    if comm.rank == 0:
        print("RESULT " + json.dumps({"sizes": n.tolist(), "seconds": t.tolist(), "alpha_s": a,
                                      "beta_s_per_byte": b}), flush=True)


# ---- the parent: launch, interleave, summarise --------------------------------------------------
def mpiexec():
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def launch(processes, threads, child_args, timeout=900):
    env = {**os.environ, "NANOGRAD_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, os.path.abspath(__file__), *child_args]
    if processes > 1:
        command = [mpiexec(), "-n", str(processes), *command]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def write_text(path, n=1_000_000, seed=0):
    """n characters of random text over 65 symbols (char6's vocabulary size); its content does not matter."""
    import numpy as np
    symbols = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-\n"))[:65]
    text = "".join(np.random.default_rng(seed).choice(symbols, n))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main():
    args = parse_args(sys.argv[1:])
    if args.child == "train":
        return child_train(args)
    if args.child == "allreduce":
        return child_allreduce()
    os.nice(args.nice - os.nice(0))  # the children inherit it
    load_before = os.getloadavg()
    names = list(SETTINGS)
    runs = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        data_file = os.path.join(tmp, "input.txt")
        write_text(data_file)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                processes, threads = SETTINGS[name]
                out_dir = os.path.join(tmp, f"{name}-{r}")
                row = launch(processes, threads, ["--child", "train", f"--steps={args.steps}",
                                                  f"--out_dir={out_dir}", f"--data_file={data_file}"])
                runs[name].append(row)
                print(f"round {r} {name}: {row['tok_s']:7.0f} tok/s, {row['step_s'] * 1000:6.0f} ms/step"
                      + (f", all-reduce {row['allreduce_s'] * 1000:.0f} ms ({row['allreduce_s'] / row['step_s']:.1%})"
                         if processes > 1 else ""), flush=True)
        fit = launch(2, 1, ["--child", "allreduce"])
    load_after = os.getloadavg()

    ratio = lambda a, b: [x["tok_s"] / y["tok_s"] for x, y in zip(runs[a], runs[b])]  # noqa: E731
    summary = {
        "median_tok_s": {n: statistics.median(x["tok_s"] for x in runs[n]) for n in names},
        "ratio_2x1_over_1x2": ratio("2x1", "1x2"), "ratio_2x1_over_1x1": ratio("2x1", "1x1"),
        "ratio_1x2_over_1x1": ratio("1x2", "1x1"),
        "allreduce_share": [x["allreduce_s"] / x["step_s"] for x in runs["2x1"]],
        "allreduce_ms": [x["allreduce_s"] * 1000 for x in runs["2x1"]],
        "compute_ms_2x1": [(x["step_s"] - x["allreduce_s"]) * 1000 for x in runs["2x1"]],
        "bucket_bytes": runs["2x1"][0]["bucket_bytes"],
        "mpi_allreduce_fit": fit,
        "nice": os.nice(0), "load_average_before": load_before, "load_average_after": load_after, "cpus": os.cpu_count(),
        "rounds": args.rounds, "steps": args.steps, "runs": runs,
    }
    print(f"\nchar6, {MICRO_BATCHES} micro-batches of {CHAR6['batch_size']}x{CHAR6['block_size']} tokens per step, "
          f"{args.rounds} rounds x {args.steps} steps, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after, on {os.cpu_count()} CPUs")
    for n in names:
        print(f"  {n}: median {summary['median_tok_s'][n]:.0f} tok/s, rounds {[round(x['tok_s']) for x in runs[n]]}")
    for key in ("ratio_2x1_over_1x2", "ratio_2x1_over_1x1", "ratio_1x2_over_1x1", "allreduce_share"):
        v = summary[key]
        print(f"  {key}: median {statistics.median(v):.3f}, range {min(v):.3f} .. {max(v):.3f}")
    print(f"  buckets: {[round(b / 2**20, 1) for b in summary['bucket_bytes']]} MiB; MPI_Allreduce fit on 2 ranks: "
          f"alpha {fit['alpha_s'] * 1e6:.0f} us, 1/beta {1 / fit['beta_s_per_byte'] / 1e9:.2f} GB/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
