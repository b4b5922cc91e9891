"""Every option of every script is checked where it is parsed.

The walk below reads each script's config dataclass, so an option added tomorrow is walked
too: every number must declare its interval (gpt/config.py's `option(..., valid=...)`), every
string its choices unless it is listed in FREE_TEXT, and each out-of-range value must end in
one line on stderr naming the option, and exit code 2, before any work starts. The scripts'
`main` runs in-process through run_main (fast); two subprocess runs prove the real exit code.
"""
import dataclasses
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import chat  # noqa: E402
import chat_web  # noqa: E402
import eval as evaluate  # noqa: E402
import sample  # noqa: E402
import scaling  # noqa: E402
import train  # noqa: E402
from gpt import inspect as ginspect  # noqa: E402
from gpt.cli import run_main  # noqa: E402
from gpt.config import ConfigError, Interval, build, usage  # noqa: E402

# script name -> (config class, main taking the options)
SCRIPTS = {
    "train.py": (train.TrainConfig, train.main),
    "sample.py": (sample.SampleConfig, sample.main),
    "chat.py": (chat.ChatConfig, chat.main),
    "chat_web.py": (chat_web.WebConfig, chat_web.main),
    "eval.py": (evaluate.EvalConfig, evaluate.main),
    "scaling.py": (scaling.ScalingConfig, scaling.main),
    "gpt.inspect": (ginspect.InspectConfig, lambda argv: ginspect.main(["attention"] + argv)),
}
# String options whose value is a path, a prompt or a name checked where it is used.
FREE_TEXT = {
    "train.py": {"out_dir", "init_from", "data_file", "gpt2_dir", "sft_file", "chat_file"},
    "sample.py": {"out_dir", "init_from", "start"},
    "chat.py": {"out_dir", "init_from", "system", "prompt", "prompts_file"},
    "chat_web.py": {"out_dir", "init_from", "host"},
    "eval.py": {"init_from", "data_file"},
    "scaling.py": {"out_dir", "results_dir", "sizes", "data_file"},
    "gpt.inspect": {"out_dir", "init_from", "prompt", "data_file", "image"},
}
OPTIONS = [(script, f) for script, (cls, _) in SCRIPTS.items() for f in dataclasses.fields(cls)]


def bad_values(field):
    """Values the option must refuse: wrong type, outside its interval, not a choice."""
    valid, kind = field.metadata.get("valid"), type(field.default)
    if kind is bool:
        return ["maybe"]
    if kind is str:
        return ["no-such-choice"] if valid else []
    values = ["abc"] + (["1.5"] if kind is int else ["nan"])
    for end, is_open, outward in ((valid.low, valid.low_open, -1), (valid.high, valid.high_open, 1)):
        if math.isinf(end):  # an open infinite end refuses infinity itself
            values += [repr(end)] if is_open and kind is float else []
        elif is_open:
            values.append(repr(kind(end)))
        else:  # just past a closed end
            values.append(repr(int(end) + outward) if kind is int else repr(math.nextafter(end, outward * math.inf)))
    return values


def closed_ends(field):
    """Values at the edge of the option's range that it must accept."""
    valid, kind = field.metadata.get("valid"), type(field.default)
    if not isinstance(valid, Interval):
        return list(valid or [])
    return [kind(end) for end, is_open in ((valid.low, valid.low_open), (valid.high, valid.high_open))
            if not is_open and not math.isinf(end)]


def expect_one_line_exit_2(main, argv, capsys, mentions):
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert mentions in err, err


@pytest.mark.parametrize("script,field", OPTIONS, ids=[f"{s}:{f.name}" for s, f in OPTIONS])
def test_every_option_declares_its_range(script, field):
    valid, kind = field.metadata.get("valid"), type(field.default)
    if kind in (int, float):
        assert isinstance(valid, Interval), f"{script} --{field.name}: declare valid='[low, high)'"
        assert field.default in valid, f"{script} --{field.name}: the default {field.default} is outside {valid}"
    elif kind is str:
        assert bool(valid) != (field.name in FREE_TEXT[script]), \
            f"{script} --{field.name}: declare valid=(choices...) or list it in FREE_TEXT"
        assert not valid or field.default in valid


@pytest.mark.parametrize("script,field", OPTIONS, ids=[f"{s}:{f.name}" for s, f in OPTIONS])
def test_out_of_range_values_exit_2_with_one_line(script, field, capsys):
    cls, main = SCRIPTS[script]
    for value in bad_values(field):
        expect_one_line_exit_2(main, [f"--{field.name}={value}"], capsys, field.name)
    for value in closed_ends(field):  # the ends that the interval includes are accepted
        try:
            build(cls, {field.name: value})
        except ConfigError as e:
            assert "out of range" not in str(e) and "not a choice" not in str(e), e


CROSS_OPTION = [
    ("train.py", ["--warmup_iters=500", "--lr_decay_iters=100"], "warmup_iters"),
    ("train.py", ["--learning_rate=1e-4", "--min_lr=1e-3"], "min_lr"),
    ("train.py", ["--n_embd=10", "--n_head=3"], "n_head"),
    ("train.py", ["--tokenizer=gpt2"], "gpt2_dir"),
    ("train.py", ["--sft_file=pairs.jsonl"], "init_from"),
    ("train.py", ["--chat_file=chats.jsonl"], "init_from"),
    ("train.py", ["--init_from=gpt2", "--sft_file=pairs.jsonl", "--chat_file=chats.jsonl"], "give one"),
    ("sample.py", ["--num_beams=2", "--num_samples=2"], "num_return_sequences"),
    ("sample.py", ["--num_return_sequences=3", "--num_beams=2"], "num_beams"),
    ("chat.py", ["--prompt=hi", "--prompts_file=in.jsonl"], "two modes"),
    ("chat.py", ["--system=Be brief.", "--prompts_file=in.jsonl"], "system"),
    ("eval.py", ["--max_length=1"], "max_length"),
    ("eval.py", ["--max_length=8", "--stride=9"], "stride"),
    ("scaling.py", ["--sizes=1x2x32,2x2x32"], "at least 3"),
    ("scaling.py", ["--sizes=1x3x32,1x2x32,2x2x32"], "--sizes"),
    ("scaling.py", ["--sizes=0x2x32,1x2x32,2x2x32"], "--sizes"),
]


@pytest.mark.parametrize("script,argv,mentions", CROSS_OPTION)
def test_constraints_between_options_exit_2_at_parse_time(script, argv, mentions, capsys):
    expect_one_line_exit_2(SCRIPTS[script][1], argv, capsys, mentions)


def test_a_toml_value_is_checked_like_a_command_line_one(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("batch_size = 0\n")
    expect_one_line_exit_2(train.main, [str(config)], capsys, "batch_size=0 is out of range")


def test_help_shows_each_range_and_each_choice_once():
    text = usage(sample.SampleConfig, "sample.py")
    assert "; in [0, 1]" in text
    line = next(line for line in text.splitlines() if line.startswith("  --early_stopping="))
    meaning = line[32:]  # after the aligned --key=value column
    assert all(meaning.count(f"'{choice}'") + meaning.count(f" {choice},") == 1
               for choice in ("true", "false", "never")), line


def test_help_aligns_the_meanings_in_one_column():
    lines = usage(train.TrainConfig, "train.py").splitlines()[3:]
    for line in lines:
        key = line.split()[0]
        assert line.startswith(("  --", " " * 32)), line
        if line.startswith("  --") and len(key) + 2 < 32:  # a wider key has its meaning on the next line
            assert line[:32].rstrip() == "  " + key and line[32] != " ", line


@pytest.mark.parametrize("script,option,message", [
    ("sample.py", "--top_p=1.5", "top_p=1.5 is out of range: top_p must be in [0, 1]"),
    ("train.py", "--batch_size=0", "batch_size=0 is out of range: batch_size must be in [1, inf)"),
])
def test_the_scripts_exit_2_with_one_line(script, option, message):
    run = subprocess.run([sys.executable, os.path.join(ROOT, script), option], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert run.stderr == f"error: {message}\n"
    assert run.stdout == ""


def test_an_os_error_is_one_line_naming_the_file_and_the_reason():
    from gpt.cli import error_line
    assert error_line(FileNotFoundError(2, "No such file or directory", "x/y.txt")) == "x/y.txt: No such file or directory"
    assert error_line(FileNotFoundError("no checkpoint in out-x: train first")) == "no checkpoint in out-x: train first"
