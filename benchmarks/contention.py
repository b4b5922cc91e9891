"""Training when the cores are shared: slowdowns of ours and PyTorch, side by side.

    python benchmarks/contention.py                       # baby, ours and torch, 3 rounds of 4 s
    python benchmarks/contention.py --config char6 --seconds 8 --rounds 2
    python benchmarks/contention.py --frameworks ours ours@/path/to/other/checkout   # A/B two versions

Three scenarios, each a training loop (training_loops.py: forward, backward, clip, AdamW,
zero_grad on fixed random batches) in its own child process with the framework's default
threads (no NANOGRAD_/OPENBLAS_/OMP_NUM_THREADS, unless --threads sets all of them):

- alone: one training;
- pair: two copies of the same training at once (two experiments side by side);
- busy: one training beside a busy single-threaded process (`while True: pass`).

A child builds its model and warms up, says READY, and starts timing only when the parent
says GO, which it says to both trainings of a pair at once; it then steps for --seconds
and reports its steps per second. So the measured windows overlap completely and leave out
imports and warmup. The slowdown of a scenario is the alone rate over its rate, where
"alone" is measured in the same round: on a machine that other work shares, each round's
ratio compares runs taken minutes apart at most, and the rounds alternate the frameworks
(the order flips each round). The table gives the median over rounds and the spread
(min-max); the load average before each scenario is printed with it. On a machine with
more than 2 cores, pin this script to 2 (`taskset -c 0,1`): the scenarios are sized for two.

`ours@PATH` imports nanograd and gpt from another checkout at PATH, for an A/B of two
versions in one run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = ("alone", "pair", "busy")
THREAD_VARS = ("NANOGRAD_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BUSY = "while True: pass"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="baby", choices=["baby", "char6"])
    ap.add_argument("--frameworks", nargs="+", default=["ours", "torch"], help="ours, torch, or ours@PATH")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per training and scenario")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all scenarios for every framework")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before READY")
    ap.add_argument("--threads", type=int, default=None, help="set every thread count to this (default: unset)")
    ap.add_argument("--json", help="also write the per-round results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- the child: one training, timed between GO and --seconds later ----------------------
def child(spec, args):
    framework, _, root = spec.partition("@")
    sys.path[:0] = [os.path.abspath(root) if root else os.path.dirname(HERE), HERE]
    import training_loops as loops
    if framework == "torch":
        loop = loops.TorchLoop(loops.torch_model(args.config))
    else:
        loop = loops.PlainLoop(loops.our_model(args.config))
    batches = loops.make_batches(args.config)
    for i in range(args.warmup):
        loop.step(*batches[i % len(batches)])
    print("READY", flush=True)
    sys.stdin.readline()  # GO
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        loop.step(*batches[steps % len(batches)])
        steps += 1
    dt = time.perf_counter() - t0
    print("RESULT " + json.dumps({"steps": steps, "seconds": dt}), flush=True)


# ---- the parent: scenarios, rounds, the table ------------------------------------------
def child_env(threads):
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads:
        env.update({k: str(threads) for k in THREAD_VARS})
    return env


def start_child(spec, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--config", args.config,
           "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(args.threads))
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{spec} child failed before READY: {line}{proc.stdout.read()}")
    return proc


def finish_child(proc, spec):
    out, _ = proc.communicate(timeout=600)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            return r["steps"] / r["seconds"]
    raise RuntimeError(f"{spec} child failed: exit {proc.returncode}\n{out}")


def run_scenario(spec, scenario, args):
    """Steps per second of each training in `scenario` (one number, or two for a pair)."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if scenario == "busy" else None
    try:
        procs = [start_child(spec, args) for _ in range(2 if scenario == "pair" else 1)]
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        return [finish_child(p, spec) for p in procs]
    finally:
        if busy:
            busy.kill()
            busy.wait()


def main():
    args = parse_args(sys.argv[1:])
    if args.child:
        return child(args.child, args)
    threads = f"{args.threads} threads" if args.threads else "each framework's default threads"
    print(f"contention: config {args.config}, {args.seconds:g} s per training, {args.rounds} rounds, {threads}, "
          f"{os.cpu_count()} CPUs")
    rates = {spec: {s: [] for s in SCENARIOS} for spec in args.frameworks}
    for r in range(args.rounds):
        for spec in args.frameworks[:: 1 if r % 2 == 0 else -1]:
            for scenario in SCENARIOS:
                load = os.getloadavg()[0]
                got = run_scenario(spec, scenario, args)
                rates[spec][scenario].append(got)
                print(f"round {r + 1} {spec:8s} {scenario:5s}: {', '.join(f'{v:.2f}' for v in got)} steps/s "
                      f"(load average {load:.1f} before)", flush=True)
    print(f"\nslowdown against alone in the same round (median over {args.rounds} rounds, min-max; "
          "a pair's two trainings both count):")
    print(f"{'framework':30s} {'alone steps/s':>14s} {'pair':>18s} {'busy':>18s}")
    summary = {}
    for spec, by in rates.items():
        alone = [a[0] for a in by["alone"]]
        cells, summary[spec] = [], {"alone": alone}
        for scenario in ("pair", "busy"):
            slow = [alone[r] / v for r, got in enumerate(by[scenario]) for v in got]
            summary[spec][scenario] = slow
            cells.append(f"{statistics.median(slow):5.2f}x ({min(slow):.2f}-{max(slow):.2f})")
        print(f"{spec:30s} {statistics.median(alone):14.2f} {cells[0]:>18s} {cells[1]:>18s}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rates": rates, "slowdowns": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
