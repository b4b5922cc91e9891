"""What the hook points cost: a training step (forward + backward) with hooks unused, empty, and used.

    python benchmarks/hooks_overhead.py                        # the CPU Shakespeare model, 1 thread
    python benchmarks/hooks_overhead.py --against=e14cc58      # also gpt/model.py from before the hooks

Variants, each timed on the same weights and batch, alternating in rounds (best round wins,
since other work only ever slows a round down):
  plain       model(idx, targets): the training path, hook points present but inactive
  empty       model.run_with_hooks(idx, {}, targets)
  identity    a hook returning its input at every point but the attention pattern
  pattern     the same plus every attention pattern (the unfused attention path)
  before      (with --against) the GPT class of gpt/model.py at that commit, without hook points
It also times one inactive hook point call and multiplies by the calls per step: an upper
bound on what hooks add to the training path.

Left out: GPU timings (the Python overhead measured here is the same there).
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=128)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--block_size", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    ap.add_argument("--against", default="", help="a git commit whose gpt/model.py has no hook points")
    return ap.parse_args(argv)


def model_class_at(commit):
    """The GPT class from gpt/model.py as it was at `commit` (loaded from a temporary file)."""
    source = subprocess.run(["git", "show", f"{commit}:gpt/model.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "model_before.py")
    with open(path, "w") as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("model_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GPT, module.GPTConfig


def step_fn(model, idx, targets, hooks=None):
    """One forward + backward (gradients cleared), through run_with_hooks when hooks is not None."""
    def step():
        _, loss = model(idx, targets) if hooks is None else model.run_with_hooks(idx, hooks, targets)
        loss.backward()
        model.zero_grad()
    return step


def main(argv):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import nanograd as ng
    from gpt.model import GPT, GPTConfig, HookPoints, HookScope

    def build(gpt_cls, config_cls):
        ng.manual_seed(0)  # the same weights for every variant
        return gpt_cls(config_cls(block_size=args.block_size, vocab_size=65, n_layer=args.n_layer,
                                  n_head=args.n_head, n_embd=args.n_embd))
    model = build(GPT, GPTConfig)
    rng = np.random.default_rng(0)
    idx, targets = (rng.integers(0, 65, (args.batch_size, args.block_size)) for _ in range(2))
    names = model.hook_names()
    identity = {n: (lambda x: x) for n in names if not n.endswith("pattern")}
    variants = {"plain": step_fn(model, idx, targets), "empty": step_fn(model, idx, targets, {}),
                "identity": step_fn(model, idx, targets, identity),
                "pattern": step_fn(model, idx, targets, {n: (lambda x: x) for n in names})}
    if args.against:
        variants["before"] = step_fn(build(*model_class_at(args.against)), idx, targets)
    for step in variants.values():
        step()  # warm up
    times = {name: [] for name in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            t = time.perf_counter()
            for _ in range(args.steps):
                variants[name]()
            times[name].append((time.perf_counter() - t) / args.steps * 1e3)
    print(f"model: {args.n_layer} layers, {args.n_embd} wide, batch {args.batch_size} x {args.block_size}, "
          f"{args.threads} thread(s); ms per forward+backward, best / median of {args.rounds} rounds")
    best_plain = min(times["plain"])
    for name, ts in times.items():
        print(f"  {name:<9} {min(ts):8.2f} {np.median(ts):8.2f}   {min(ts) / best_plain:6.3f}x plain")
    scope = HookScope(HookPoints(), "blocks.0.")
    x = ng.Tensor(np.zeros(1, dtype=np.float32))
    per_call = min(timeit.repeat(lambda: scope("resid_pre", x), number=100_000, repeat=5)) / 100_000 * 1e6
    calls = len(names) - args.n_layer  # every point is called once, the pattern is only checked (wants)
    print(f"an inactive hook point: {per_call * 1e3:.0f} ns; {calls} per forward = {per_call * calls:.1f} us "
          f"= {per_call * calls / 1e3 / best_plain * 100:.3f}% of a plain step")


if __name__ == "__main__":
    main(sys.argv[1:])
