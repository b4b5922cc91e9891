"""benchmarks/gpu_check.py's own logic, on the CPU: the dry run end to end, and the loss comparison."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(300))


def test_dry_run_runs_every_step_that_needs_no_gpu(tmp_path):
    data, report = tmp_path / "data", tmp_path / "report.md"
    data.mkdir()
    (data / "shakespeare.txt").write_text(TEXT)
    one_thread = dict(os.environ, NANOGRAD_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")  # same sums on both runs
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--data", str(data),
                          "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=one_thread)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split(" | ") for line in report.read_text().splitlines() if line.startswith("| ")]
    status = {row[0][2:]: row[1] for row in rows[1:]}
    assert status == {"environment": "INFO", "tests": "PASS", "shakespeare": "PASS", "train baby": "SKIPPED",
                      "generation": "PASS", "train char6": "SKIPPED"}, report.read_text()
    assert "losses, max /cpu - cpu/ = 0.00e+00 (bar 0.001)" in report.read_text()


def test_losses_must_agree_within_the_bar_at_the_same_iterations():
    cpu = {("loss", 1): 4.0, ("val_loss", 2): 3.5}
    worst, where = gpu_check.compare_losses(cpu, {("loss", 1): 4.0004, ("val_loss", 2): 3.5})
    assert abs(worst - 4e-4) < 1e-12 and where == "loss at iteration 1"
    assert gpu_check.compare_losses(cpu, {("loss", 1): 4.0})[0] == float("inf")


def test_the_data_directory_is_required(tmp_path):
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--data", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "--prepare" in run.stderr
