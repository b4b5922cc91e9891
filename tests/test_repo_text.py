"""The repository speaks of the project alone: no trace of how the work was organised.

Every tracked text file (code, docs, configs, data) is read. None may name an issue number, a
work period ("this session"), a scratch worker, a shared machine's state, or an absolute path
into a folder outside the repository (a home directory, a scratch area); system paths such as
/usr or /tmp in command examples are fine. Every fenced block in the Markdown files carries a
language tag, so the docs check (scripts/check_docs.py) sees what kind of block it is.

Left out: spelling, link checking (tests/test_docs.py runs the documents' commands).
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = {
    "an issue number": r"\bissues?\s*#?\d+",
    "a work period": r"\b(?:this|that|each|every|an? earlier|a later|the previous|the next|one) sessions?\b|\bsession \d+",
    "a worker or helper of the team": r"\bscratch workers?\b|\bsub-?agents?\b|\bhelper-\d+",
    "the state of a shared machine": r"\bthe machine this was built on\b|\bother (?:jobs|engineers|sessions)\b"
                                     r"|\bthe machine was shared\b|\bthis one had such\b",
    "an absolute path outside the repository": r"(?<![\w.])/(?:work|root|home|Users|mnt|scratch)/",
}
PATTERNS = {name: re.compile(p, re.IGNORECASE) for name, p in FORBIDDEN.items()}
FENCE = re.compile(r"^\s*```(.*)$")


def tracked_text_files():
    """(path, text) of every tracked file that is UTF-8 text."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in names.decode().split("\0"):
        path = os.path.join(ROOT, name)
        if not name or name == os.path.relpath(__file__, ROOT) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a picture or other binary file


def test_no_file_speaks_of_how_the_work_was_organised():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: no list of tracked files")
    found = [f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group()!r}"
             for name, text in tracked_text_files()
             for what, pattern in PATTERNS.items() for m in pattern.finditer(text)]
    assert not found, "\n".join(found)


def test_every_fenced_block_in_the_docs_has_a_language():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: no list of tracked files")
    untagged = []
    for name, text in tracked_text_files():
        if not name.endswith(".md"):
            continue
        opening = True
        for n, line in enumerate(text.splitlines(), 1):
            m = FENCE.match(line)
            if m:
                if opening and not m.group(1).strip():
                    untagged.append(f"{name}:{n}")
                opening = not opening
    assert not untagged, "fenced blocks without a language tag (```bash, ```python, ```console, ```text):\n" \
        + "\n".join(untagged)
