"""Run the documentation: every ```bash, ```python and ```console block of README.md and docs/, in order, on a fresh copy.

    python scripts/check_docs.py              # the blocks CI runs (tests/test_docs.py runs the same)
    python scripts/check_docs.py --all        # every block, the long runs too, in a fresh venv
    python scripts/check_docs.py --all --from=README.md:120    # start at a block (the earlier ones' files must exist)

The conventions (README.md's "How the docs are checked" says the same for writers):
  - The documents run in this order, each block after the ones before it, in one copy of the
    repository (its tracked and untracked, not ignored, files): README.md, docs/reading_guide.md,
    then every other docs/**/*.md in sorted path order. A block may use what an earlier one made.
  - A ```bash (or sh, shell) block runs with `bash -e` in the copy's root; it passes if it exits 0.
  - A ```python block runs as a script in the copy's root. Each comment `# prints: TEXT` says
    that the script prints the line TEXT; the printed lines must be exactly those, in that order
    (no comment: no output). `...` in TEXT matches any characters, for what varies from run to run.
  - A ```console block is a terminal transcript: each line `$ COMMAND` runs in bash in the copy's
    root, and the lines after it, up to the next `$ `, are what it must print (stdout then stderr,
    `...` matching anything as above); its exit status is not checked, so a transcript can show
    an error and its exit code 2.
  - On the line just above the fence, `<!-- docs: skip (REASON) -->` keeps a block out of CI
    (minutes of training, a GPU, an extra that CI does not install); `--all` runs it.
    `<!-- docs: skip (REASON); ci: COMMAND -->` also gives CI a quick stand-in to run instead
    (say a 20-iteration training run), so the blocks after it find the files they need.
    `<!-- docs: no-run (REASON) -->` is never run: an API summary, an excerpt that needs inputs
    the reader brings, a command for hardware this check does not have.
  - A block that stops on a missing optional package (gpt/extras.py's one-line error) counts as
    skipped, naming the `pip install` that would run it, and so does a later block of the same
    document that fails (it may need what the skipped one makes). CI installs the extras, so
    there nothing is excused.

In CI mode `python`, `pip` and `pytest` mean this interpreter; --all makes a venv (with the
system's site-packages, so installed extras are reused) in which the README's `pip install -e .`
installs the copy. The cache of downloads (~/.cache/nanograd-gpt) is shared unless
--fresh_cache. With --all every command's output is printed, for pasting numbers into the text.

Left out: checking the output of bash blocks (only their exit status), interleaved stdout and
stderr in transcripts (a command's stdout is compared first, then its stderr).
"""
import argparse
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python", "console": "console"}
MARKER = re.compile(r"^\s*<!--\s*docs:\s*(skip|no-run)\s*(.*?)\s*-->\s*$")
PRINTS = re.compile(r"#\s*prints:\s?(.*)$")
MISSING_EXTRA = re.compile(r"error: .* needs \S+: pip install -e '\.\[\w+\]'.*")
CI_TIMEOUT = 300  # seconds per block in CI mode


@dataclasses.dataclass
class Block:
    """One fenced code block of a document and how the checks treat it."""
    path: str            # relative to the repository root
    line: int            # 1-based line of the opening fence
    language: str        # "bash" or "python"
    code: str
    mark: str = ""       # "", "skip" or "no-run"
    reason: str = ""
    ci_command: str = ""  # the stand-in CI runs for a skipped block

    @property
    def name(self):
        return f"{self.path}:{self.line}"

    def expected_lines(self):
        """The lines a python block says it prints (its `# prints:` comments, in order)."""
        return [m.group(1).rstrip() for m in map(PRINTS.search, self.code.splitlines()) if m]

    def transcript(self):
        """[(command, [the lines it prints]), ...] of a console block."""
        steps = []
        for line in self.code.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line.rstrip())
        return steps


def documents(root=ROOT):
    """The checked documents in running order: README.md, the reading guide, then docs/**/*.md sorted."""
    first = ["README.md", os.path.join("docs", "reading_guide.md")]
    rest = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    return [p for p in first if os.path.exists(os.path.join(root, p))] + [p for p in rest if p not in first]


def parse_blocks(text, path):
    """The bash and python blocks of one markdown text, with the marker on the line above each."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1))
                    and not lines[j].strip("`").strip()), len(lines))
        language = LANGUAGES.get(fence.group(2).lower())
        if language:
            block = Block(path, i + 1, language, "\n".join(lines[i + 1:end]) + "\n")
            marker = MARKER.match(lines[i - 1]) if i > 0 else None
            if marker:
                block.mark = marker.group(1)
                block.reason, block.ci_command = _reason_and_stand_in(marker.group(2), block.name)
            blocks.append(block)
        i = end + 1
    return blocks


def _reason_and_stand_in(text, where):
    """'(REASON); ci: COMMAND' -> (REASON, COMMAND); a marker without a reason is an error."""
    reason, _, command = text.partition("; ci:")
    reason = reason.strip()
    if not (reason.startswith("(") and reason.endswith(")")):
        raise ValueError(f"{where}: write the marker as <!-- docs: skip (REASON) --> "
                         f"or <!-- docs: skip (REASON); ci: COMMAND -->, got {text!r}")
    return reason[1:-1], command.strip()


def all_blocks(root=ROOT):
    blocks = []
    for path in documents(root):
        with open(os.path.join(root, path), encoding="utf-8") as fh:
            blocks += parse_blocks(fh.read(), path)
    return blocks


# ---- a fresh copy and an environment to run in -------------------------------------------------
def copy_repository(destination, root=ROOT):
    """Copy the repository's tracked and untracked-but-not-ignored files (what a fresh clone of the
    working tree would hold) to `destination`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for path in filter(None, listed):
        source = os.path.join(root, path)
        if os.path.isfile(source):  # a deleted but still tracked file is skipped
            os.makedirs(os.path.dirname(os.path.join(destination, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, path))
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)  # so .gitignore and git commands work


def command_dir(directory, python):
    """A folder of `python`, `python3`, `pip` and `pytest` commands that all run `python`, for PATH."""
    os.makedirs(directory, exist_ok=True)
    for name, line in (("python", '"$@"'), ("python3", '"$@"'), ("pip", '-m pip "$@"'), ("pytest", '-m pytest "$@"')):
        path = os.path.join(directory, name)
        with open(path, "w") as fh:
            fh.write(f'#!/bin/sh\nexec "{python}" {line}\n')
        os.chmod(path, 0o755)
    return directory


class Runner:
    """Runs blocks in order in one copy of the repository."""

    def __init__(self, workdir, python, env_overrides=None, timeout=None, echo=False):
        self.workdir, self.timeout, self.echo = workdir, timeout, echo
        self.missing = {}  # document -> the first missing-extra line met in it
        self.env = dict(os.environ, **(env_overrides or {}))
        bin_dir = command_dir(os.path.join(os.path.dirname(workdir), "bin"), python)
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")
        self.env.pop("PYTHONPATH", None)
        self.env["PYTHONUNBUFFERED"] = "1"

    def run(self, block, ci=True):
        """(status, detail): status is 'passed', 'failed', 'skipped'; detail says why or shows the output."""
        if block.mark == "no-run":
            return "skipped", f"not run: {block.reason}"
        code = block.code
        if block.mark == "skip" and ci:
            if not block.ci_command:
                return "skipped", f"skipped in CI: {block.reason}"
            code = block.ci_command + "\n"
        if block.language == "console" and code is block.code:
            return self.run_transcript(block)
        if block.language in ("bash", "console"):  # a console block's CI stand-in is a bash command
            argv = ["bash", "-e", "-c", code]
        else:
            script = os.path.join(self.workdir, f".docs_block_{block.line}.py")
            with open(script, "w", encoding="utf-8") as fh:
                fh.write(code)
            argv = ["python", script]
        start = time.time()
        try:
            result = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                    timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return "failed", f"did not finish in {self.timeout} s"
        output = result.stdout + result.stderr
        took = f"{time.time() - start:.0f} s"
        missing = MISSING_EXTRA.search(output)
        if result.returncode != 0 and missing:
            self.missing.setdefault(block.path, missing.group(0))
            return "skipped", f"needs an extra: {missing.group(0)}"
        failure = None
        if result.returncode != 0:
            failure = f"exit {result.returncode} after {took}; output:\n{_tail(output)}"
        elif block.language == "python" and code is block.code:
            mismatch = compare(block.expected_lines(), result.stdout.splitlines())
            failure = mismatch and mismatch + f"\nfull output:\n{_tail(output)}"
        if failure and block.path in self.missing:
            return "skipped", f"failed after an earlier block needed an extra ({self.missing[block.path]})"
        if failure:
            return "failed", failure
        return "passed", f"{took}\n{output}" if self.echo else took


    def run_transcript(self, block):
        """Run each `$ COMMAND` of a console block; (status, detail) as `run`."""
        start = time.time()
        for command, expected in block.transcript():
            try:
                result = subprocess.run(["bash", "-c", command], cwd=self.workdir, env=self.env, capture_output=True,
                                        text=True, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                return "failed", f"`{command}` did not finish in {self.timeout} s"
            printed = (result.stdout + result.stderr).splitlines()
            mismatch = compare(expected, printed)
            if mismatch:
                return "failed", f"`{command}`: {mismatch}\nfull output:\n{_tail(result.stdout + result.stderr)}"
        return "passed", f"{time.time() - start:.0f} s"


def compare(expected, printed):
    """None if the printed lines match the expected ones (`...` matching anything), else what differs."""
    printed = [line.rstrip() for line in printed]
    for i, (want, got) in enumerate(zip(expected, printed)):
        pattern = "^" + ".*".join(re.escape(part) for part in want.split("...")) + "$"
        if not re.match(pattern, got):
            return f"printed line {i + 1} is {got!r}; the text says {want!r}"
    if len(expected) != len(printed):
        return (f"printed {len(printed)} lines, the text shows {len(expected)} (`# prints:` comments); "
                f"first unmatched: {(printed + expected)[min(len(expected), len(printed))]!r}")
    return None


def _tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all", action="store_true", help="run the skipped blocks too, in a fresh venv (long)")
    ap.add_argument("--from", dest="start", default="", help="start at this block (PATH:LINE)")
    ap.add_argument("--fresh_cache", action="store_true", help="an empty download cache (the datasets are fetched again)")
    ap.add_argument("--keep", action="store_true", help="keep the copy and print where it is")
    args = ap.parse_args(argv)
    blocks = all_blocks()
    if args.start:
        names = [b.name for b in blocks]
        if args.start not in names:
            sys.exit(f"error: no block {args.start}; blocks are PATH:LINE of the opening fence, e.g. {names[0]}")
        blocks = blocks[names.index(args.start):]
    scratch = tempfile.mkdtemp(prefix="check-docs-")
    workdir = os.path.join(scratch, "repo")
    copy_repository(workdir)
    python, env = sys.executable, {}
    if args.all:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", os.path.join(scratch, "venv")],
                       check=True)
        python = os.path.join(scratch, "venv", "bin", "python")
    if args.fresh_cache:
        env["NANOGRAD_GPT_CACHE"] = os.path.join(scratch, "cache")
    runner = Runner(workdir, python, env, timeout=None if args.all else CI_TIMEOUT, echo=args.all)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for block in blocks:
        print(f"== {block.name} ({block.language}{', ' + block.mark + ': ' + block.reason if block.mark else ''})",
              flush=True)
        status, detail = runner.run(block, ci=not args.all)
        counts[status] += 1
        print(f"   {status}: {detail}", flush=True)
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if args.keep:
        print(f"the copy is in {workdir}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
