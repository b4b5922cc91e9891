"""gpt/extras.py: a missing optional package is one line naming the pip command of its extra."""
import subprocess
import sys

import pytest

from gpt.extras import MissingExtra, require


def test_require_imports_what_is_there():
    assert require("json", "plot", "a test").dumps([1]) == "[1]"


def test_a_missing_package_names_its_extra():
    with pytest.raises(MissingExtra, match=r"a test needs no_such_package_x: pip install -e '\.\[plot\]'"):
        require("no_such_package_x", "plot", "a test")
    with pytest.raises(ImportError):  # what callers that treat the package as optional catch
        require("no_such_package_x", "plot", "a test")


def test_a_script_that_lacks_it_prints_one_line():
    script = "from gpt.extras import require\nrequire('no_such_package_x', 'bench', 'benchmarks/x.py')\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr == "error: benchmarks/x.py needs no_such_package_x: pip install -e '.[bench]' " \
                       "(from the repository root)\n"
