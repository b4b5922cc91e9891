"""train.py and sample.py end to end on a tiny config: exact resume, signals, bad input.

Each run trains a 1-layer model on a few KB of text for a handful of iterations, so the
whole file takes seconds. Bad input is checked through subprocesses, because what the
user sees (one line on stderr, exit code 2) is the thing under test.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402

TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(150))
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4",
        "--eval_iters=2", "--log_interval=1", "--warmup_iters=2", "--lr_decay_iters=8",
        "--always_save_checkpoint=true", "--learning_rate=3e-3"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def losses(out_dir):
    """{iteration: training loss} from metrics.jsonl."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        rows = [json.loads(line) for line in fh]
    return {r["iter"]: r["loss"] for r in rows if "loss" in r}


def run_script(script, *args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, text_file):
    full, half = str(tmp_path / "full"), str(tmp_path / "half")
    common = TINY + [f"--data_file={text_file}", "--eval_interval=4", "--dropout=0.1"]
    train.main(common + [f"--out_dir={full}", "--max_iters=8"])
    train.main(common + [f"--out_dir={half}", "--max_iters=4"])
    train.main(common + [f"--out_dir={half}", "--max_iters=8", "--init_from=resume"])
    a, b = losses(full), losses(half)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert a == b  # bit-identical floats at every iteration


def test_sample_is_reproducible_and_streams(tmp_path, text_file):
    out = str(tmp_path / "run")
    train.main(TINY + [f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=4"])
    args = [f"--out_dir={out}", "--start=Line", "--max_new_tokens=30", "--seed=7"]
    first, second = run_script("sample.py", *args), run_script("sample.py", *args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("Line")
    batch = run_script("sample.py", *args, "--num_samples=2", "--temperature=0")
    assert batch.returncode == 0 and batch.stdout.count("Line") >= 2


def test_sigterm_saves_and_resumes(tmp_path, text_file):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *TINY, f"--data_file={text_file}",
                             f"--out_dir={out}", "--max_iters=100000", "--eval_interval=100000",
                             "--always_save_checkpoint=false"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 60
    while not (os.path.exists(metrics) and len(losses(out)) >= 3) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM" in stdout
    resumed = run_script("train.py", *TINY, f"--data_file={text_file}", f"--out_dir={out}",
                         "--init_from=resume", "--max_iters=1", "--eval_interval=100000")
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout


def test_non_finite_loss_stops_and_keeps_the_checkpoint(tmp_path, text_file):
    out = str(tmp_path / "run")
    common = TINY + [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=2", "--grad_clip=0"]
    train.main(common + ["--max_iters=2"])
    before = open(os.path.join(out, "ckpt.safetensors"), "rb").read()
    r = run_script("train.py", *common, "--init_from=resume", "--max_iters=50", "--learning_rate=1e30",
                   "--decay_lr=false", "--always_save_checkpoint=false")
    assert r.returncode == 2 and f"(the last good checkpoint is {out}/ckpt.safetensors)" in r.stderr
    assert open(os.path.join(out, "ckpt.safetensors"), "rb").read() == before
    fresh = run_script("train.py", *TINY, f"--data_file={text_file}", f"--out_dir={tmp_path / 'fresh'}",
                       "--eval_interval=100", "--max_iters=50", "--learning_rate=1e30", "--decay_lr=false",
                       "--grad_clip=0")
    assert fresh.returncode == 2 and "stopping (no checkpoint was written yet): try a lower" in fresh.stderr


@pytest.mark.parametrize("args, message", [
    (["--max_itres=5"], "did you mean max_iters"),
    (["--n_embd=30", "--n_head=4"], "not divisible"),
    (["--block_size=100000"], "block_size"),
    (["--device=cuda"], "cupy"),
    (["--max_iters=abc"], "expected int"),
])
def test_train_bad_input_is_one_line(tmp_path, text_file, args, message):
    if args == ["--device=cuda"]:
        import nanograd
        if nanograd.cuda_available():
            pytest.skip("a GPU is present")
    r = run_script("train.py", *TINY, f"--data_file={text_file}", f"--out_dir={tmp_path / 'o'}", *args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and message.lower() in r.stderr.lower(), r.stderr


def test_sample_bad_input_is_one_line(tmp_path, text_file):
    missing = run_script("sample.py", f"--out_dir={tmp_path / 'nothing'}")
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr
    out = str(tmp_path / "run")
    train.main(TINY + [f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    unknown = run_script("sample.py", f"--out_dir={out}", "--start=ZZZ")
    assert unknown.returncode == 2 and "'Z'" in unknown.stderr, unknown.stderr
    ckpt = os.path.join(out, "ckpt.safetensors")
    data = open(ckpt, "rb").read()
    with open(ckpt, "wb") as fh:
        fh.write(data[: len(data) // 2])
    corrupt = run_script("sample.py", f"--out_dir={out}")
    assert corrupt.returncode == 2 and len(corrupt.stderr.strip().splitlines()) == 1, corrupt.stderr


def test_help_lists_every_key():
    r = run_script("train.py", "--help")
    assert r.returncode == 0
    for key in train.TrainConfig.__dataclass_fields__:
        assert f"--{key}=" in r.stdout


def test_a_new_run_starts_a_fresh_metrics_record_and_a_resumed_one_continues_it(tmp_path, text_file):
    out = str(tmp_path / "run")
    common = TINY + [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=4"]
    train.main(common + ["--max_iters=4"])
    with open(os.path.join(out, "metrics.jsonl"), "a") as fh:  # logged after the last save, then killed
        fh.write(json.dumps({"iter": 5, "loss": -1.0}) + "\n" + '{"iter": 6, "lo')
    train.main(common + ["--max_iters=6", "--init_from=resume"])
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, 7)) and resumed[5] != -1.0
    train.main(common + ["--max_iters=2", "--overwrite=true"])  # from scratch again, replacing the run
    assert sorted(losses(out)) == [1, 2]


def test_every_script_defaults_to_the_folder_train_writes(tmp_path):
    from gpt.config import DEFAULT_OUT_DIR
    assert train.parse(train.TrainConfig, [train.DEFAULT_CONFIG], "train.py").out_dir == DEFAULT_OUT_DIR
    shown = run_script("train.py", "--help").stdout  # the values a run with no arguments uses
    assert f"--out_dir='{DEFAULT_OUT_DIR}'" in shown and "--log_interval=50 " in shown
    for script in ("sample.py", "eval.py"):
        assert f"'{DEFAULT_OUT_DIR}'" in run_script(script, "--help").stdout
    missing = run_script("sample.py", f"--out_dir={tmp_path / 'none'}")
    assert "python train.py" in missing.stderr


def test_sample_piped_into_head_ends_quietly(tmp_path, text_file):
    out = str(tmp_path / "run")
    train.main(TINY + [f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=2"])
    sample = subprocess.list2cmdline([sys.executable, os.path.join(ROOT, "sample.py"), f"--out_dir={out}",
                                      "--max_new_tokens=2000"])
    r = subprocess.run(f"{sample} | head -n 1", shell=True, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    assert r.stderr == "", r.stderr
