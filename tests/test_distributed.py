"""Data-parallel training under mpiexec: the same run as one process, exact resume, faults, bad input.

Every test that launches ranks needs mpi4py and an `mpiexec` (pip install -e '.[mpi]') and
is skipped, with that reason, without them. The runs train a 1-layer model for a few dozen
iterations on one core per rank, so each takes a second or two. The bucket tests and the
missing-mpi4py test need no MPI at all.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt.checkpoint import load_checkpoint
from nanograd.allreduce import GradientBuckets, plan_buckets
from nanograd.tensor import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(150))
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=4",
        "--log_interval=1", "--warmup_iters=5", "--learning_rate=3e-3", "--always_save_checkpoint=true",
        "--gradient_accumulation_steps=2"]
ENV = {**os.environ, "NANOGRAD_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# the mpiexec installed beside this Python (the mpich wheel's), else the one on PATH
MPIEXEC = next((p for p in (os.path.join(os.path.dirname(sys.executable), "mpiexec"), shutil.which("mpiexec"))
                if p and os.path.exists(p)), None)
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'")


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def train(*args, ranks=2, script="train.py", timeout=120, env=None):
    """Run train.py (or a script taking its options) on `ranks` processes; the CompletedProcess."""
    launcher = [MPIEXEC, "-n", str(ranks)] if ranks > 1 else []
    return subprocess.run([*launcher, sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env or ENV)


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def evaluations(out_dir):
    return {r["iter"]: (r["train_loss"], r["val_loss"]) for r in metrics(out_dir) if "val_loss" in r}


def weights(out_dir):
    return load_checkpoint(out_dir).model_state


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- the same run as one process -------------------------------------------------------------
@needs_mpi
def test_two_ranks_match_one_process(tmp_path, text_file):
    args = TINY + [f"--data_file={text_file}", "--max_iters=100", "--lr_decay_iters=100", "--eval_interval=10",
                   "--dropout=0"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    for out, ranks in ((one, 1), (two, 2)):
        result = train(*args, f"--out_dir={out}", ranks=ranks)
        assert result.returncode == 0, result.stderr
    a, b = evaluations(one), evaluations(two)
    assert sorted(a) == sorted(b) == list(range(0, 101, 10))
    for it in a:
        np.testing.assert_allclose(b[it], a[it], rtol=1e-4, err_msg=f"evaluation at iteration {it}")
    wa, wb = weights(one), weights(two)
    assert max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa) <= 1e-5
    assert sum(1 for r in metrics(two) if "loss" in r) == 100  # rank 0 alone wrote metrics.jsonl


@needs_mpi
def test_two_rank_resume_is_bit_exact_with_dropout(tmp_path, text_file):
    args = TINY + [f"--data_file={text_file}", "--lr_decay_iters=12", "--eval_interval=6", "--dropout=0.1"]
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    runs = [(full, ["--max_iters=12"]), (half, ["--max_iters=6"]), (half, ["--max_iters=12", "--init_from=resume"])]
    for out, extra in runs:
        result = train(*args, f"--out_dir={out}", *extra)
        assert result.returncode == 0, result.stderr
    losses = lambda out: {r["iter"]: r["loss"] for r in metrics(out) if "loss" in r}  # noqa: E731
    assert losses(full) == losses(half) and len(losses(full)) == 12  # bit-identical floats
    assert evaluations(full) == evaluations(half)
    wf, wh = weights(full), weights(half)
    assert all(np.array_equal(wf[k], wh[k]) for k in wf)


@needs_mpi
def test_resume_with_another_world_size_restarts_the_streams(tmp_path, text_file):
    out = str(tmp_path / "run")
    args = TINY + [f"--data_file={text_file}", "--lr_decay_iters=8", "--eval_interval=4", "--dropout=0.1",
                   f"--out_dir={out}"]
    assert train(*args, "--max_iters=4").returncode == 0
    result = train(*args, "--max_iters=8", "--init_from=resume", ranks=1)
    assert result.returncode == 0, result.stderr
    assert "written by 2 process(es), this run has 1: the dropout random streams restart" in result.stdout
    assert max(r["iter"] for r in metrics(out)) == 8


# ---- faults ----------------------------------------------------------------------------------
def _rank_pid(out_dir, rank):
    """The pid of the train.py process of MPI rank `rank` writing to out_dir (from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue
        if (os.path.basename(cmdline[0]).startswith(b"python") and f"--out_dir={out_dir}".encode() in cmdline
                and f"PMI_RANK={rank}".encode() in environ):
            return int(pid)
    raise AssertionError(f"no rank {rank} process for {out_dir}")


def _start_long_run(out_dir, text_file):
    """mpiexec -n 2 train.py for 'forever'; returns once a checkpoint and 5 logged iterations exist."""
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "train.py"),
                             *TINY, f"--data_file={text_file}", f"--out_dir={out_dir}", "--max_iters=1000000",
                             "--lr_decay_iters=100", "--eval_interval=4"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(os.path.join(out_dir, "ckpt.safetensors")) and os.path.exists(
                os.path.join(out_dir, "metrics.jsonl")) and len(metrics(out_dir)) >= 7:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the run did not start: {proc.communicate()}")


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's pid in /proc")
def test_kill_9_of_one_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path, text_file):
    out = str(tmp_path / "run")
    proc = _start_long_run(out, text_file)
    os.kill(_rank_pid(out, 1), signal.SIGKILL)
    start = time.time()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.time() - start < 60 and proc.returncode != 0
    lines = error_lines(stderr)  # rank 1's witness speaks; the others' die unheard with their ranks
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 (") and "died without a word" in lines[0], stderr
    assert lines[0].endswith(f"The last checkpoint, {out}/ckpt.safetensors, is intact.")
    assert load_checkpoint(out).train_state["iter_num"] > 0


@needs_mpi
def test_watchdog_ends_the_job_when_a_rank_hangs(tmp_path, text_file):
    out = str(tmp_path / "run")
    start = time.time()
    result = train("hang", "1", "5", *TINY, f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=1000",
                   "--eval_interval=4", script="tests/mpi_faults.py", timeout=90,
                   env={**ENV, "NANOGRAD_DIST_TIMEOUT": "5"})
    assert time.time() - start < 60 and result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: rank 0"), result.stderr
    assert "no answer from the other ranks for 5 s" in lines[0]
    assert load_checkpoint(out).train_state["iter_num"] == 4


@needs_mpi
@pytest.mark.parametrize("fault, expected", [
    ("nan", "error: loss became nan at iteration 5 on rank 1; stopping (the last good checkpoint is "),
    ("raise", "error: rank 1 "),
    ("drift", "error: at iteration 8 the weights of rank(s) [1] differ from rank 0's"),
])
def test_a_fault_on_one_rank_ends_the_job_with_one_line(tmp_path, text_file, fault, expected):
    out = str(tmp_path / "run")
    start = time.time()
    result = train(fault, "1", "5", *TINY, f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=1000",
                   "--eval_interval=4", script="tests/mpi_faults.py", timeout=90)
    assert time.time() - start < 60 and result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    if fault == "raise":
        assert "RuntimeError: planted fault at iteration 5" in lines[0]
    assert load_checkpoint(out).train_state["iter_num"] == 4  # the last good checkpoint


@needs_mpi
def test_sigterm_to_mpiexec_saves_once_and_resumes(tmp_path, text_file):
    out = str(tmp_path / "run")
    proc = _start_long_run(out, text_file)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.count("stopped by SIGTERM") == 1
    stopped_at = load_checkpoint(out).train_state["iter_num"]
    result = train(*TINY, f"--data_file={text_file}", f"--out_dir={out}", "--init_from=resume",
                   f"--max_iters={stopped_at + 2}", "--lr_decay_iters=100", "--eval_interval=4")
    assert result.returncode == 0, result.stderr
    assert f"resumed from {out}" in result.stdout and "streams restart" not in result.stdout


# ---- bad input -------------------------------------------------------------------------------
@needs_mpi
def test_world_size_must_divide_gradient_accumulation_steps(tmp_path, text_file):
    result = train(*TINY, f"--data_file={text_file}", f"--out_dir={tmp_path}", "--gradient_accumulation_steps=3")
    assert result.returncode == 2
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "not divisible by the 2 ranks" in result.stderr and "--gradient_accumulation_steps=2" in result.stderr


def test_a_launcher_without_mpi4py_says_how_to_install_it(tmp_path, text_file):
    blocker = tmp_path / "no_mpi4py" / "mpi4py"  # an mpi4py that cannot be imported
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('mpi4py is hidden by the test')\n")
    env = {**ENV, "PYTHONPATH": str(blocker.parent), "PMI_RANK": "0", "PMI_SIZE": "2"}  # as mpiexec sets them
    result = train(*TINY, f"--data_file={text_file}", f"--out_dir={tmp_path}", ranks=1, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == error_lines(result.stderr)
    assert "mpi4py is not installed: pip install -e '.[mpi]'" in result.stderr


# ---- the buckets, without MPI ----------------------------------------------------------------
def _params_with_grads(shapes, seed=0):
    rng = np.random.default_rng(seed)
    params = [Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes]
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    return params


def test_buckets_fill_to_the_cap_and_a_big_gradient_stands_alone():
    params = _params_with_grads([(10,), (20,), (30,), (100,), (5,)])  # 40, 80, 120, 400, 20 bytes
    sizes = [[p.grad.size for p in bucket] for bucket in plan_buckets(params, bucket_bytes=200)]
    assert sizes == [[10, 20], [30], [100], [5]]


def test_bucketed_sum_gives_every_gradient_its_sum_as_a_view():
    params = _params_with_grads([(3, 4), (7,), (2, 2, 2), (50,)])
    before = [p.grad.copy() for p in params]
    calls = []
    buckets = GradientBuckets(lambda flat: (calls.append(flat.size), flat.__imul__(3)), bucket_bytes=64)
    buckets.sum_(params)  # a reducer that triples: the sum over three identical ranks
    for p, g in zip(params, before):
        np.testing.assert_array_equal(p.grad, 3 * g)
        assert p.grad.shape == g.shape and p.grad.base is not None  # a view into a bucket
    assert calls == [12, 7 + 8, 50]


# ---- GPUs (run with pytest --device cuda; skipped on the CPU) ---------------------------------
def test_gpu_gradients_sum_with_nccl_and_through_the_host(device):
    if device != "cuda" or not HAVE_MPI:
        pytest.skip("needs --device cuda, CuPy and mpi4py")
    import cupy
    from mpi4py import MPI
    from nanograd.allreduce import MPISum, NCCLSum, nccl_available
    reducers = [MPISum(MPI.COMM_WORLD)] + ([NCCLSum(MPI.COMM_WORLD)] if nccl_available() else [])
    for reducer in reducers:  # one rank here: the sum over ranks is each gradient itself
        params = _params_with_grads([(3, 4), (7,)])
        for p in params:
            p.data, p.grad = cupy.asarray(p.data), cupy.asarray(p.grad)
        before = [cupy.asnumpy(p.grad) for p in params]
        GradientBuckets(reducer).sum_(params)
        for p, g in zip(params, before):
            assert isinstance(p.grad, cupy.ndarray)
            np.testing.assert_array_equal(cupy.asnumpy(p.grad), g)


def test_more_ranks_than_gpus_says_how_many_to_start(tmp_path, text_file, device):
    if device != "cuda" or not HAVE_MPI:
        pytest.skip("needs --device cuda, CuPy and mpi4py")
    import cupy
    ranks = cupy.cuda.runtime.getDeviceCount() + 1
    result = train(*TINY, f"--data_file={text_file}", f"--out_dir={tmp_path}", "--device=cuda",
                   f"--gradient_accumulation_steps={ranks}", ranks=ranks)
    assert result.returncode == 2
    assert error_lines(result.stderr) == [result.stderr.strip()] and "start at most" in result.stderr
