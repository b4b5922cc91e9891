"""The whole GPU check in one run of at most 8 minutes, written up as one Markdown report.

    python benchmarks/gpu_check.py --prepare gpu_check_data        # here, online: cache the Shakespeare text
    python benchmarks/gpu_check.py --data gpu_check_data --report $OUT/gpu_check.md   # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --data DIR --report r.md   # the plumbing, on the CPU (a test)

The GPU machine has no network, so the Shakespeare text travels with the working tree:
`--prepare DIR` copies it (downloading it first if needed, gpt/data.py) to DIR/shakespeare.txt,
and `--data DIR` points NANOGRAD_GPT_CACHE there for every step. gpu_check_data/ is in
.gitignore (5 MB of text that is not the project's), so name it in the device tool's `carry`:
    run(command="python benchmarks/gpu_check.py --data gpu_check_data --report $OUT/gpu_check.md",
        carry=["gpu_check_data"], timeout_s=540)

Steps, in this order, each in a child process under its own time cap (all within --budget
seconds), the report rewritten after each one so a cut-off run still leaves one:
  environment  nvidia-smi, and the versions of Python, NumPy, CuPy and torch
  tests        python -m pytest --device=cuda: tests taking the `device` fixture run on the GPU,
               the rest on the CPU as usual; packages missing there (transformers, ...) skip
  shakespeare  200 iterations of configs/shakespeare_char_cpu.toml, once on the CPU and once on
               the GPU, logging every iteration: every training loss and evaluation must agree
               within 1e-3 (same seed, same batches, dropout 0; only the float32 kernels differ)
  train baby   benchmarks/train_speed.py --device cuda --config baby: ours (CuPy) against torch CUDA
  generation   greedy KV-cache decoding of GPT-2 124M's shape (random weights), batch 1, on the GPU:
               tokens/s against the copy-bandwidth bound, and the first tokens against the CPU's
  train char6  the same as train baby for char6
The dry run keeps the plumbing and skips the GPU: tests run one device test, shakespeare trains
a tiny model 3 iterations on the CPU twice, generation decodes a tiny model on the CPU, and the
train speed steps (torch CUDA) are skipped.

Left out: multi-GPU (NCCL) runs, the gpt2s config, peak GPU memory over time.
"""
import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-3  # largest allowed |CPU loss - GPU loss|
SHAKESPEARE = ["configs/shakespeare_char_cpu.toml", "--max_iters=200", "--log_interval=1", "--eval_interval=100"]
TINY = ["--max_iters=3", "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2",
        "--eval_iters=1", "--eval_interval=3"]
GPT2_SHAPE = dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="directory holding shakespeare.txt (made by --prepare)")
    ap.add_argument("--report", default="gpu_check.md", help="the Markdown report to write")
    ap.add_argument("--budget", type=float, default=470, help="seconds for all steps together")
    ap.add_argument("--dry-run", action="store_true", help="CPU only, toy sizes: checks this script's logic")
    ap.add_argument("--prepare", metavar="DIR", help="copy the cached Shakespeare text to DIR and exit")
    ap.add_argument("--generation", choices=["cpu", "cuda"], help=argparse.SUPPRESS)  # the child of that step
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---- steps: (name, cap in seconds, function(check) -> (status, summary, details)) ----------
def environment(check):
    lines = [f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs"]
    for name in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "regex", "hypothesis", "mpi4py", "transformers"):
        try:
            lines.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{name} not installed")
    smi = shutil.which("nvidia-smi")
    gpu = check.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], 20).stdout.strip() \
        if smi else "nvidia-smi not found"
    usable = check.run([sys.executable, "-c", "import nanograd; print(nanograd.cuda_available())"], 60).stdout
    lines += [f"GPU: {gpu}", f"nanograd.cuda_available(): {usable.strip()}"]
    if check.dry_run or usable.strip().endswith("True"):
        return "INFO", gpu, lines
    return "FAIL", f"CuPy cannot use a GPU here ({gpu}); the GPU steps below test nothing", lines


def tests(check):
    args = ["tests/nanograd/test_engine.py::test_tensor_used_twice_accumulates", "--device=cpu"] if check.dry_run \
        else ["--device=cuda"]
    result = check.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], check.cap)
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    return outcome(result), summary, result.stdout.splitlines()[-40:]


def shakespeare(check):
    devices = ("cpu", "cpu") if check.dry_run else ("cpu", "cuda")
    extra = TINY if check.dry_run else []
    runs, lines = [], []
    for i, device in enumerate(devices):
        out = os.path.join(check.work, f"shakespeare-{i}-{device}")
        start = time.time()
        result = check.run([sys.executable, "train.py", *SHAKESPEARE, *extra, f"--out_dir={out}",
                            f"--device={device}"], check.cap / 2)
        lines.append(f"{device}: exit {result.returncode} in {time.time() - start:.0f}s; "
                     + " / ".join(result.stdout.strip().splitlines()[-2:]))
        if result.returncode != 0:
            return outcome(result), f"train.py --device={device} failed", lines + result.stdout.splitlines()[-20:]
        runs.append(read_losses(os.path.join(out, "metrics.jsonl")))
    worst = compare_losses(*runs)
    lines.append(f"compared {len(runs[0])} losses; largest difference {worst[0]:.2e} ({worst[1]})")
    status = "PASS" if worst[0] <= TOLERANCE else "FAIL"
    return status, f"{len(runs[0])} losses, max |cpu - {devices[1]}| = {worst[0]:.2e} (bar {TOLERANCE})", lines


def read_losses(path):
    """{(kind, iteration): loss} from train.py's metrics.jsonl: each training loss and evaluation."""
    losses = {}
    with open(path) as f:
        for row in map(json.loads, f):
            for kind in ("loss", "train_loss", "val_loss"):
                if kind in row:
                    losses[(kind, row["iter"])] = row[kind]
    return losses


def compare_losses(a, b):
    """(largest |a - b|, where) over the keys of both; infinite if they log different iterations."""
    if a.keys() != b.keys():
        return float("inf"), f"different logged iterations: {sorted(a.keys() ^ b.keys())[:4]}"
    return max(((abs(a[k] - b[k]), f"{k[0]} at iteration {k[1]}") for k in a), default=(0.0, "nothing logged"))


def train_speed(config):
    def step(check):
        if check.dry_run:
            return "SKIPPED", "dry run: needs torch CUDA", []
        result = check.run([sys.executable, "benchmarks/train_speed.py", "--device", "cuda", "--config", config,
                            "--threads", "4"], check.cap)
        best = [line for line in result.stdout.splitlines() if line.startswith("best round:")]
        summary = best[-1] if result.returncode == 0 and best else f"exit {result.returncode}"
        return outcome(result, ok="INFO"), summary, result.stdout.splitlines()[-30:]
    return step


def generation(check):
    device = "cpu" if check.dry_run else "cuda"
    args = ["--tiny"] if check.dry_run else []
    result = check.run([sys.executable, os.path.abspath(__file__), "--generation", device, *args], check.cap)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not rows:
        return outcome(result), f"exit {result.returncode}", result.stdout.splitlines()[-20:]
    r = rows[-1]
    summary = (f"{r['tokens_per_s']:.1f} tok/s ({1000 / r['tokens_per_s']:.2f} ms/token), "
               f"{r['tokens_per_s'] / r['bound_tokens_per_s']:.0%} of the bandwidth bound "
               f"{r['bound_tokens_per_s']:.0f} tok/s; first {r['compared']} tokens as the CPU's: {r['same_as_cpu']}")
    return ("PASS" if r["same_as_cpu"] else "FAIL"), summary, [json.dumps(r)]


def outcome(result, ok="PASS"):
    """A step's status from its child's exit code (124: cut off at its time cap)."""
    return ok if result.returncode == 0 else "TIMEOUT" if result.returncode == 124 else "FAIL"


STEPS = [("environment", 30, environment), ("tests", 180, tests), ("shakespeare", 100, shakespeare),
         ("train baby", 50, train_speed("baby")), ("generation", 50, generation),
         ("train char6", 80, train_speed("char6"))]


# ---- the run and its report ----------------------------------------------------------------
class Check:
    """Runs the steps within the budget and rewrites the report after each."""

    def __init__(self, args):
        self.dry_run, self.report, self.deadline = args.dry_run, args.report, time.time() + args.budget
        self.env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        if args.data:
            self.env["NANOGRAD_GPT_CACHE"] = os.path.abspath(args.data)
        self.work = tempfile.mkdtemp(prefix="gpu_check-")
        self.rows, self.cap = [], 0

    def run(self, command, timeout):
        """subprocess.run in the repository root, stdout and stderr together; exit 124 when cut off."""
        try:
            return subprocess.run(command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=max(1, timeout))
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(command, 124, out + f"\n[cut off after {timeout:.0f}s]", None)

    def all(self):
        for name, cap, step in STEPS:
            self.cap = min(cap, self.deadline - time.time())
            start = time.time()
            if self.cap < 5:
                status, summary, details = "SKIPPED", "out of time", []
            else:
                status, summary, details = step(self)
            self.rows.append((name, status, time.time() - start, summary, details))
            self.write()
        shutil.rmtree(self.work, ignore_errors=True)
        return all(row[1] in ("PASS", "INFO", "SKIPPED") for row in self.rows)

    def write(self):
        title = "GPU check (dry run on the CPU)" if self.dry_run else "GPU check"
        lines = [f"# {title}", "", f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                 "`python benchmarks/gpu_check.py`", "", "| step | status | seconds | result |", "|---|---|---|---|"]
        lines += [f"| {n} | {s} | {t:.0f} | {summary.replace('|', '/')} |" for n, s, t, summary, _ in self.rows]
        for name, _, _, _, details in self.rows:
            lines += ["", f"## {name}", "", "```", *details, "```"]
        os.makedirs(os.path.dirname(os.path.abspath(self.report)), exist_ok=True)
        with open(self.report, "w") as f:
            f.write("\n".join(lines) + "\n")


# ---- the generation step's child ------------------------------------------------------------
def measure_generation(device, tiny):
    """Print one JSON line: greedy tokens/s on `device`, the copy-bandwidth bound, tokens against the CPU's."""
    import numpy as np

    import nanograd as ng
    from gpt.model import GPT, GPTConfig
    shape = dict(block_size=32, vocab_size=64, n_layer=1, n_head=2, n_embd=16) if tiny else GPT2_SHAPE
    new, compared = (5, 5) if tiny else (100, 20)
    ng.manual_seed(0)
    model = GPT(GPTConfig(**shape)).eval()
    prompt = np.random.default_rng(0).integers(0, shape["vocab_size"], (1, 16))
    cpu_tokens = np.asarray(model.generate(prompt, compared, temperature=0))
    model.to(device)
    model.generate(prompt, 4, temperature=0)  # warm up: kernels compiled, buffers allocated
    times = []
    for _ in range(3):
        start = time.perf_counter()
        tokens = ng.backend.to_device(model.generate(prompt, new, temperature=0), "cpu")
        times.append(time.perf_counter() - start)
    weight_bytes = 4 * sum(p.size for p in model.parameters())
    bandwidth = copy_bandwidth(device)
    print(json.dumps({"device": device, "new_tokens": new, "tokens_per_s": new / min(times),
                      "bandwidth_gb_s": bandwidth / 1e9, "bound_tokens_per_s": bandwidth / weight_bytes,
                      "compared": compared,
                      "same_as_cpu": bool((np.asarray(tokens)[:, :cpu_tokens.shape[1]] == cpu_tokens).all())}))


def copy_bandwidth(device, mib=256):
    """Bytes read + written per second copying a float32 array on `device`, best of 5."""
    import nanograd as ng
    xp = ng.backend.cupy if device == "cuda" else __import__("numpy")
    src = xp.ones(mib * 2**18, dtype=xp.float32)
    dst = xp.empty_like(src)
    best = float("inf")
    for _ in range(5):
        if device == "cuda":
            xp.cuda.Device().synchronize()
        start = time.perf_counter()
        dst[...] = src
        if device == "cuda":
            xp.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def prepare(directory):
    """Copy the Shakespeare text (downloaded into the cache first if needed) to directory/shakespeare.txt."""
    sys.path.insert(0, ROOT)
    from gpt import data
    data.shakespeare_text()
    os.makedirs(directory, exist_ok=True)
    shutil.copy(os.path.join(data.cache_dir(), "shakespeare.txt"), os.path.join(directory, "shakespeare.txt"))
    print(f"wrote {directory}/shakespeare.txt; carry {directory} to the GPU machine and pass --data {directory}")


def main(argv):
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.prepare)
    if args.generation:
        sys.path.insert(0, ROOT)
        return measure_generation(args.generation, args.tiny)
    if not args.data or not os.path.isfile(os.path.join(args.data, "shakespeare.txt")):
        sys.exit(f"error: --data must be a directory holding shakespeare.txt (make one with --prepare DIR), "
                 f"got {args.data!r}")
    ok = Check(args).all()
    print(open(args.report).read())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
