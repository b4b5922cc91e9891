"""Faults of the run folder and the disk: each ends in one line and loses nothing.

A full disk is real here, not mocked: a small tmpfs is mounted as the run folder (or filled
up with a file) and train.py, metrics.jsonl's appends and an HF export write into it. A
read-only folder is a tmpfs mounted read-only. Those tests need root to mount and are skipped,
with that reason, elsewhere. The lock, leftover and overwrite tests run anywhere with /proc or
POSIX signals; the runs train a 1-layer model for a few iterations, a second or so each.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpt import hf
from gpt.checkpoint import load_checkpoint
from gpt.rundir import LOCK, RunFolderError, append_line, check_writable
from gpt.safetensors import TEMPORARY, DiskFullError
from gpt.tokenizer import BPETokenizer
from tests.gpt.tiny import tiny_model
from tests.test_distributed import HAVE_MPI, MPIEXEC, needs_mpi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(150))
TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--lr_decay_iters=100", "--learning_rate=3e-3"]
ENV = {**os.environ, "NANOGRAD_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def train(*args, launcher=(), timeout=60):
    """Run train.py with TINY and `args` (a subprocess: what the user sees is under test)."""
    return subprocess.run([*launcher, sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def start(*args, launcher=()):
    """train.py running 'forever' in the background; returns the Popen once the run folder is locked."""
    out = next(a.split("=", 1)[1] for a in args if a.startswith("--out_dir="))
    proc = subprocess.Popen([*launcher, sys.executable, os.path.join(ROOT, "train.py"), *TINY, *args,
                             "--max_iters=10000000"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(out, "metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    return proc


def one_error_line(result):
    """The single `error: ...` line a failed script printed (asserts it is all of stderr)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def leftovers(folder):
    return [name for name in os.listdir(folder) if TEMPORARY.search(name)]


# ---- a real full disk: tmpfs ------------------------------------------------------------------
@pytest.fixture
def tmpfs():
    """mount(path, size, read_only=False): a tmpfs mounted at `path` (created), unmounted after the test."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs (a real small or read-only disk) needs root and mount(8)")
    mounted = []

    def mount(path, size, read_only=False):
        os.makedirs(path, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(str(path))
        return str(path)

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", path], check=True)


def fill(folder, leave):
    """Fill the disk of `folder` with a file, leaving about `leave` bytes free (a whole number of pages)."""
    free = shutil.disk_usage(folder).free
    with open(os.path.join(folder, "filler"), "wb") as fh:
        fh.write(b"\0" * (free - leave))
    assert abs(shutil.disk_usage(folder).free - leave) <= 4096


@pytest.mark.parametrize("ranks", [1, 2])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, tmpfs, text_file, ranks):
    if ranks > 1 and not HAVE_MPI:
        pytest.skip("needs mpi4py and mpiexec: pip install -e '.[mpi]'")
    out = tmpfs(tmp_path / "run", "1m")
    launcher = (MPIEXEC, "-n", str(ranks)) if ranks > 1 else ()  # rank 0 writes, and its error ends the job
    args = [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=4", "--always_save_checkpoint=true",
            "--gradient_accumulation_steps=2"]
    assert train(*args, "--max_iters=4", launcher=launcher).returncode == 0
    size = os.path.getsize(os.path.join(out, "ckpt.safetensors"))
    fill(out, size // 2)  # room for the metrics lines, not for a second checkpoint beside the first
    line = one_error_line(train(*args, "--max_iters=8", "--init_from=resume", launcher=launcher))
    rank = r"rank 0 \(.+\): " if ranks > 1 else ""
    match = re.fullmatch(rf"error: {rank}no space left in {out} for ckpt\.safetensors: it needs "
                         r"([\d,]+) bytes, ([\d,]+) are free; the previous ckpt\.safetensors is unchanged\. Free "
                         r"some space \(or write elsewhere\) and run again", line)
    assert match, line
    needed, free = (int(g.replace(",", "")) for g in match.groups())
    assert abs(needed - size) < 100 and free < needed  # the same model: the size up to its metadata
    assert load_checkpoint(out, resume=True).train_state["iter_num"] == 4
    assert leftovers(out) == [] and not os.path.exists(os.path.join(out, LOCK))


def test_full_disk_while_preparing_the_data_leaves_nothing(tmp_path, tmpfs, text_file):
    out = tmpfs(tmp_path / "run", "8k")  # two pages; train.bin needs four
    line = one_error_line(train(f"--data_file={text_file}", f"--out_dir={out}", "--max_iters=4"))
    assert re.match(rf"error: no space left in {out} for train\.bin: it needs 14,112 bytes, [\d,]+ are free; "
                    r"train\.bin was not written\.", line), line
    assert os.listdir(out) == []


def test_full_disk_appending_a_metrics_line_cuts_the_partial_line(tmp_path, tmpfs):
    folder = tmpfs(tmp_path / "disk", "16k")
    path = os.path.join(folder, "metrics.jsonl")
    with open(path, "w") as fh:
        fh.write('{"iter": 0}\n'.rjust(4090))  # 6 bytes short of a whole page
    fill(folder, 0)
    with pytest.raises(DiskFullError, match=rf"^no space left in {folder} for metrics\.jsonl: it needs 101 bytes, "
                                            r"0 are free; the previous metrics\.jsonl is unchanged"):
        append_line(path, "x" * 100)  # 6 bytes fit in the last page, the rest needs a page there is not
    assert os.path.getsize(path) == 4090


def test_full_disk_during_an_hf_export_leaves_no_partial_file(tmp_path, tmpfs):
    tokenizer = BPETokenizer.train(TEXT, 300)
    model = tiny_model(vocab_size=300, block_size=16, n_embd=32)
    folder = tmpfs(tmp_path / "export", "32k")
    with pytest.raises(DiskFullError, match=rf"^no space left in {folder} for model\.safetensors: it needs "
                                            r"[\d,]+ bytes, [\d,]+ are free; model\.safetensors was not written"):
        hf.save(model, tokenizer, folder)
    assert sorted(os.listdir(folder)) == ["config.json", "merges.txt", "tokenizer_config.json", "vocab.json"]
    for name in ("config.json", "tokenizer_config.json", "vocab.json"):
        with open(os.path.join(folder, name)) as fh:
            json.load(fh)  # each file there is whole


def test_full_disk_writing_a_task_summary_is_one_line(tmp_path, tmpfs):
    from gpt.tasks.induction import Induction
    folder = tmpfs(tmp_path / "disk", "16k")
    rows = [{"iter": i, "val_loss": 2 - i / 100, "induction_score": i / 100, "icl_loss_drop": i / 50}
            for i in (0, 50, 100)]
    with open(os.path.join(folder, "metrics.jsonl"), "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    fill(folder, 0)
    with pytest.raises(DiskFullError, match=rf"^no space left in {folder} for emergence\.json: it needs [\d,]+ bytes, "
                                            r"0 are free; emergence\.json was not written"):
        Induction(8, 16, 2, 4).finish(None, folder)
    assert sorted(os.listdir(folder)) == ["filler", "metrics.jsonl"]


def test_full_disk_writing_an_inspect_image_is_one_line(tmp_path, tmpfs):
    pytest.importorskip("matplotlib")
    from gpt import inspect
    folder = tmpfs(tmp_path / "disk", "16k")
    fill(folder, 0)
    fig, _ = inspect.pyplot().subplots()
    with pytest.raises(DiskFullError, match=rf"^no space left in {folder} for attn\.png: it needs [\d,]+ bytes, "
                                            r"0 are free; attn\.png was not written"):
        inspect.save(fig, os.path.join(folder, "attn.png"))
    assert os.listdir(folder) == ["filler"]


# ---- read-only and missing folders ------------------------------------------------------------
def test_a_read_only_folder_for_an_output_option_is_one_line_before_any_work(tmp_path, tmpfs, text_file):
    folder = tmpfs(tmp_path / "ro", "64k", read_only=True)
    commands = [(["train.py", *TINY, f"--data_file={text_file}"], "--out_dir", folder),
                (["train.py", *TINY, f"--data_file={text_file}"], "--out_dir", os.path.join(folder, "run")),
                (["scaling.py", "--quick=true", f"--data_file={text_file}", f"--out_dir={tmp_path / 'scaling'}"],
                 "--results_dir", os.path.join(folder, "results")),
                (["-m", "gpt.inspect", "attention"], "--image", os.path.join(folder, "attn.png"))]
    for argv, option, path in commands:
        start_time = time.time()
        result = subprocess.run([sys.executable, *argv, f"{option}={path}"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60, env=ENV)
        assert one_error_line(result) == f"error: {option}={path}: {folder} is on a read-only file system: " \
                                         f"choose another {option}"
        assert time.time() - start_time < 10 and not os.path.exists(tmp_path / "scaling")


def test_an_output_path_under_a_file_or_in_a_missing_folder_is_one_line(tmp_path, text_file):
    line = one_error_line(train(f"--data_file={text_file}", f"--out_dir={text_file}/run"))
    assert line == f"error: --out_dir={text_file}/run: {text_file} is a file, not a folder: choose another --out_dir"
    image = tmp_path / "missing" / "attn.png"
    result = subprocess.run([sys.executable, "-m", "gpt.inspect", "attention", f"--image={image}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert one_error_line(result) == (f"error: --image={image}: its folder {image.parent} does not exist: create it "
                                      "or choose another path")
    if os.path.isdir("/proc"):  # a folder no one can create, whatever the permission bits say
        assert one_error_line(train("--out_dir=/proc/run")).startswith("error: --out_dir=/proc/run: ")
    check_writable(tmp_path / "new" / "deeper", "--out_dir")  # a folder that will be created is fine
    with pytest.raises(RunFolderError, match="is a folder: give a file name"):
        check_writable(tmp_path, "--image", folder=False)


# ---- one run per folder -----------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_second_run_stops_at_once_and_a_dead_holders_lock_is_taken_over(tmp_path, text_file):
    out = str(tmp_path / "run")
    args = [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=2"]
    first = start(*args)
    try:
        line = one_error_line(train(*args, "--init_from=resume", "--max_iters=2"))
        assert re.fullmatch(rf"error: {out} is in use by train\.py \(process {first.pid} on .+, since .+\): wait for "
                            r"that run to end or stop it, or choose another --out_dir", line), line
    finally:
        first.kill()  # kill -9: its lock file stays, naming a dead process
        first.wait()
    assert str(first.pid) in open(os.path.join(out, LOCK)).read()
    result = train(*args, "--init_from=resume", f"--max_iters={load_checkpoint(out).train_state['iter_num'] + 2}")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert not os.path.exists(os.path.join(out, LOCK))  # released at the end


@needs_mpi
def test_under_mpiexec_rank_0_holds_the_folder(tmp_path, text_file):
    out = str(tmp_path / "run")
    args = [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=2", "--gradient_accumulation_steps=2"]
    first = start(*args, launcher=(MPIEXEC, "-n", "2"))
    try:
        holder = json.load(open(os.path.join(out, LOCK)))["pid"]
        with open(f"/proc/{holder}/environ", "rb") as fh:
            assert b"PMI_RANK=0" in fh.read().split(b"\0")
        for launcher in ((), (MPIEXEC, "-n", "2")):  # one process, then two ranks: one line either way
            line = one_error_line(train(*args, "--init_from=resume", launcher=launcher))
            assert line.startswith(f"error: {out} is in use by train.py (process {holder} on "), line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)


# ---- no leftovers, no silent overwrite, no empty folder ---------------------------------------
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_kill_9_mid_checkpoint_leaves_temporary_files_that_the_resume_removes(tmp_path, text_file):
    out = str(tmp_path / "run")
    args = [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=1", "--always_save_checkpoint=true",
            "--eval_iters=1"]
    assert train(*args, "--max_iters=2").returncode == 0
    for kills in range(20):  # until a kill lands while a checkpoint is being written
        proc = start(*args, "--init_from=resume")
        while not leftovers(out) and proc.poll() is None:
            time.sleep(0.0005)
        proc.kill()  # kill -9, most likely while ckpt.safetensors.tmp-* is being written
        proc.wait()
        if leftovers(out):
            break
    left = leftovers(out)
    assert left, "no kill landed while a checkpoint was being written"
    planted = {"notes.tmp-mine": True,  # not a name atomic_write gives
               "data/train.bin.tmp-0123456789ab": False,  # a folder of this run's
               "other/val.bin.tmp-0123456789ab": True, "other/run.lock": True}  # another run's folder
    for name in planted:
        os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
        open(os.path.join(out, name), "w").close()
    result = train(*args, "--init_from=resume", f"--max_iters={load_checkpoint(out).train_state['iter_num'] + 1}")
    assert result.returncode == 0, result.stderr
    assert f"removed {len(left) + 1} temporary file(s) that interrupted runs left in {out}" in result.stdout
    assert leftovers(out) == []
    assert {name: os.path.exists(os.path.join(out, name)) for name in planted} == planted


def test_a_new_run_into_a_trained_folder_refuses_unless_overwrite(tmp_path, text_file):
    out = str(tmp_path / "run")
    args = [f"--data_file={text_file}", f"--out_dir={out}", "--eval_interval=2", "--max_iters=2"]
    assert train(*args).returncode == 0
    ckpt, metrics = (open(os.path.join(out, name), "rb").read() for name in ("ckpt.safetensors", "metrics.jsonl"))
    for fresh in ([], [f"--init_from={tmp_path / 'elsewhere'}"]):  # from scratch, or fine-tuning another model
        line = one_error_line(train(*args, *fresh, "--seed=2"))
        assert line == (f"error: {out} already holds a checkpoint (ckpt.safetensors): continue that run with "
                        "--init_from=resume, or start over with --overwrite=true (the old run is replaced)")
    assert open(os.path.join(out, "ckpt.safetensors"), "rb").read() == ckpt
    assert open(os.path.join(out, "metrics.jsonl"), "rb").read() == metrics
    result = train(*args, "--seed=2", "--overwrite=true")
    assert result.returncode == 0 and f"--overwrite=true: removed the old run's {out}/ckpt.safetensors" in result.stdout
    assert open(os.path.join(out, "ckpt.safetensors"), "rb").read() != ckpt
    line = one_error_line(train(*args, f"--init_from={out}", "--overwrite=true"))
    assert "is this run's own --out_dir: fine-tune into another --out_dir" in line


@pytest.mark.parametrize("bad", ["--data_file=missing.txt", "--init_from=resume"])
def test_a_failed_start_leaves_no_folder(tmp_path, text_file, bad):
    out = tmp_path / "new" / "run"
    one_error_line(train(f"--data_file={text_file}", f"--out_dir={out}", bad))
    assert os.listdir(tmp_path) == ["input.txt"]
    existing = tmp_path / "existing"
    existing.mkdir()
    one_error_line(train(f"--data_file={text_file}", f"--out_dir={existing}", bad))
    assert os.listdir(existing) == []  # a folder the user made stays, and holds no lock file


def test_a_run_that_fails_after_it_began_keeps_its_folder_and_log(tmp_path, text_file):
    out = tmp_path / "diverged"
    result = train(f"--data_file={text_file}", f"--out_dir={out}", *TINY, "--learning_rate=1e9",
                   "--decay_lr=false", "--grad_clip=0", "--eval_interval=1000", "--max_iters=50")
    assert result.returncode == 2 and "no checkpoint was written yet" in result.stderr.splitlines()[-1]
    rows = [json.loads(r) for r in open(out / "metrics.jsonl")]
    assert rows and rows[0]["iter"] == 0 and not os.path.exists(out / LOCK)
