"""Forward + backward time of nanograd's fused ops against PyTorch on the CPU, in float32.

    python benchmarks/ops.py [--threads 2] [--repeats 10]

Shapes are those of the Shakespeare GPT (batch 8 x 256 tokens, 6 heads of 64, width 384)
plus GPT-2's 50257-token vocabulary. Both libraries get the same number of threads:
PyTorch through torch.set_num_threads, NumPy's BLAS through the environment variables it
reads when it loads (and threadpoolctl, when installed). Each op is timed best-of-N with
our run and PyTorch's interleaved, so that noise on the machine hits both alike. Without
PyTorch the script says so and exits 0.
"""
import argparse
import os
import sys
import time

BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cases(np, torch, ng):
    """{name: (our function, PyTorch's function, input arrays)}; float arrays get gradients."""
    F, TF = ng.functional, torch.nn.functional
    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    targets = lambda n, classes: rng.integers(0, classes, n)
    qkv = [normal(8, 6, 256, 64) for _ in range(3)]
    return {
        "attention (8,6,256,64) causal": (F.scaled_dot_product_attention,
                                          lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
                                          qkv),
        "layer_norm (2048,384)": (F.layer_norm, lambda x, w, b: TF.layer_norm(x, (384,), w, b),
                                  [normal(2048, 384), normal(384), normal(384)]),
        "gelu (2048,1536)": (F.gelu, lambda x: TF.gelu(x, approximate="tanh"), [normal(2048, 1536)]),
        "cross_entropy (2048,65)": (F.cross_entropy, TF.cross_entropy, [normal(2048, 65), targets(2048, 65)]),
        "cross_entropy (256,50257)": (F.cross_entropy, TF.cross_entropy,
                                      [normal(256, 50257), targets(256, 50257)]),
        "linear (2048,384)->1536": (F.linear, TF.linear, [normal(2048, 384), normal(1536, 384), normal(1536)]),
        "matmul (2048,384)@(384,1536)": (lambda a, b: a @ b, lambda a, b: a @ b,
                                         [normal(2048, 384), normal(384, 1536)]),
    }


def step_fn(fn, inputs, grad):
    """A closure running one forward of fn and its backward from the upstream gradient `grad`."""
    def step():
        for x in inputs:
            x.grad = None
        fn(*inputs).backward(grad)
    return step


def best_times(steps, repeats):
    """Best-of-`repeats` seconds for each step, the steps run round-robin after one warm-up each."""
    for step in steps:
        step()
    best = [float("inf")] * len(steps)
    for _ in range(repeats):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per op; the best counts (default 10)")
    args = parser.parse_args()
    for name in BLAS_THREAD_VARIABLES:  # before NumPy loads its BLAS
        os.environ[name] = str(args.threads)

    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gpt.extras import require
    torch = require("torch", "bench", "benchmarks/ops.py")
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass  # the environment variables above already did it
    import nanograd as ng
    ng.parallel.set_num_threads(args.threads)  # our elementwise kernels: as many threads as torch's
    ng.backend.keep_freed_memory()  # as the first backward() does

    rng = np.random.default_rng(1)
    print(f"float32, forward + backward, best of {args.repeats}, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'op':<32}{'ours ms':>10}{'torch ms':>10}{'ours/torch':>12}")
    for name, (ours, theirs, arrays) in cases(np, torch, ng).items():
        is_float = [a.dtype.kind == "f" for a in arrays]
        our_inputs = [ng.Tensor(a, requires_grad=f) for a, f in zip(arrays, is_float)]
        torch_inputs = [torch.tensor(a, requires_grad=f) for a, f in zip(arrays, is_float)]
        grad = np.asarray(rng.standard_normal(ours(*our_inputs).shape, dtype=np.float32))  # dense, shared
        steps = [step_fn(ours, our_inputs, grad), step_fn(theirs, torch_inputs, torch.from_numpy(grad))]
        ours_s, torch_s = best_times(steps, args.repeats)
        print(f"{name:<32}{ours_s * 1e3:>10.2f}{torch_s * 1e3:>10.2f}{ours_s / torch_s:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
