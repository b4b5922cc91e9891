"""Optional packages: import one by name, or stop with the one `pip install` line that provides it.

Training and sampling need only numpy and regex. Everything else is an extra of setup.cfg:
`plot` (matplotlib, for the PNGs), `crosscheck` (torch, transformers, tokenizers, tiktoken,
safetensors: the reference implementations we compare against), `bench` (crosscheck plus
threadpoolctl, for benchmarks/), `gpu` (CuPy) and `web` (Selenium, which drives Chromium in the
chat page's browser tests). A script that needs one calls

    torch = require("torch", "crosscheck", "scripts/make_random_gpt2.py")

and, where torch is missing, the user reads one line instead of a traceback:

    error: scripts/make_random_gpt2.py needs torch: pip install -e '.[crosscheck]' (from the repository root)

The error is a ModuleNotFoundError, so callers that treat the package as optional
(`except ImportError`, pytest.importorskip) keep working. Left out: version checks.
"""
import importlib
import sys


class MissingExtra(ModuleNotFoundError):
    """An optional package is not installed; the message names the pip command that installs it."""


def require(module, extra, needed_by):
    """Import and return `module`, or raise MissingExtra naming `pip install -e '.[extra]'`.

    `needed_by` says who needs it ("benchmarks/ops.py", "drawing PNGs"). Uncaught, the error
    prints as its one line (see _print_one_line); gpt/cli.py's run_main exits 2 with it.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise  # the package is there but one of its own imports failed: show that
        if sys.excepthook is sys.__excepthook__:
            sys.excepthook = _print_one_line
        raise MissingExtra(f"{needed_by} needs {module}: pip install -e '.[{extra}]' "
                           "(from the repository root)", name=module) from None


def _print_one_line(kind, error, traceback):
    """sys.excepthook for scripts outside run_main: a MissingExtra prints as `error: ...`."""
    if issubclass(kind, MissingExtra):
        print(f"error: {error}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, traceback)
