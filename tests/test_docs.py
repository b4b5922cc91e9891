"""The documentation runs: every ```bash and ```python block of README.md and docs/, in order, on a fresh copy.

One test per block, in the order a reader meets them, all in one copy of the repository, so a
block can use what an earlier one made. A ```python block must print exactly the lines its
`# prints: TEXT` comments show (`...` matches anything); a ```bash block must exit 0.
A block marked `<!-- docs: skip (REASON) -->` on the line above its fence is skipped here
(or replaced by the quick stand-in its marker names after `; ci:`); `no-run` blocks never run.
scripts/check_docs.py holds the machinery and the full statement of these conventions;
`python scripts/check_docs.py --all` runs the skipped, long blocks too.
"""
import importlib.util
import os
import sys
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("check_docs", os.path.join(ROOT, "scripts", "check_docs.py"))
check_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_docs)

BLOCKS = check_docs.all_blocks(ROOT)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """A Runner over one fresh copy of the repository, shared by the blocks in order."""
    workdir = str(tmp_path_factory.mktemp("docs") / "repo")
    check_docs.copy_repository(workdir, ROOT)
    import sys
    return check_docs.Runner(workdir, sys.executable, timeout=check_docs.CI_TIMEOUT)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.name}-{b.language}" for b in BLOCKS])
def test_block_runs_as_written(block, runner):
    status, detail = runner.run(block, ci=True)
    if status == "skipped":
        pytest.skip(detail)
    assert status == "passed", f"{block.name} ({block.language}):\n{block.code}\n{detail}"


def test_markers_are_well_formed_and_above_a_block():
    """A docs marker that is misspelt or not on the line just above a fence would silently do nothing."""
    for path in check_docs.documents(ROOT):
        lines = open(os.path.join(ROOT, path), encoding="utf-8").read().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"\s*<!--\s*docs", line):  # a marker line (the text may mention them in backticks)
                assert check_docs.MARKER.match(line), f"{path}:{i + 1}: unknown docs marker {line.strip()!r}"
                assert i + 1 < len(lines) and lines[i + 1].startswith("```"), \
                    f"{path}:{i + 1}: a docs marker must sit on the line just above a code fence"


def test_the_parser_reads_markers_prints_and_stand_ins():
    text = "\n".join(["<!-- docs: skip (four minutes); ci: python train.py --max_iters=2 -->", "```bash",
                      "python train.py", "```", "", "```python", "print(1 + 1)  # prints: 2",
                      "print('a')", "# prints: a", "```", "<!-- docs: no-run (an excerpt) -->", "```py",
                      "model(x)", "```", "```text", "not run", "```"])
    skip, script, excerpt = check_docs.parse_blocks(text, "x.md")
    assert (skip.mark, skip.reason, skip.ci_command) == ("skip", "four minutes", "python train.py --max_iters=2")
    assert (script.line, script.expected_lines()) == (6, ["2", "a"])
    assert (excerpt.mark, excerpt.language) == ("no-run", "python")
    assert check_docs.compare(["loss 1.2...", "done"], ["loss 1.234 in 3 s", "done"]) is None
    assert "line 1" in check_docs.compare(["2"], ["3"])
    assert "printed 2 lines" in check_docs.compare(["2"], ["2", "extra"])


def test_a_console_transcript_checks_what_each_command_prints(tmp_path):
    text = "\n".join(["```console", "$ echo hello", "hello", "$ echo oops >&2; exit 2", "oops", "```",
                      "```console", "$ echo 1", "2", "```"])
    right, wrong = check_docs.parse_blocks(text, "x.md")
    assert right.transcript() == [("echo hello", ["hello"]), ("echo oops >&2; exit 2", ["oops"])]
    runner = check_docs.Runner(str(tmp_path / "repo"), sys.executable, timeout=30)
    os.makedirs(runner.workdir)
    assert runner.run(right)[0] == "passed"
    status, detail = runner.run(wrong)
    assert status == "failed" and "printed line 1 is '1'" in detail
