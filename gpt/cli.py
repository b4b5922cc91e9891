"""What the scripts share: turn expected errors into one line on stderr and exit code 2.

A user who mistypes a key, points at a missing checkpoint or asks for a GPU without
CuPy should read one sentence saying what was wrong and what to do, not a traceback.
Unexpected exceptions (bugs) still show their traceback. Output piped into a reader that
stops early (`python sample.py | head -n 3`) ends quietly, as `cat` does.

Left out: logging configuration, colours.
"""
import os
import sys

from gpt.extras import MissingExtra
from nanograd.backend import DeviceError

EXIT_BAD_INPUT = 2
# Errors that describe bad input rather than a bug: all subclass ValueError except these.
EXPECTED = (ValueError, KeyError, FileNotFoundError, DeviceError, FloatingPointError, MissingExtra)


def error_line(e):
    """The one-line message of an expected error: its text, or for an OSError raised by the
    system (args (errno, strerror)) the file and the reason, never the bare error number."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    return e.args[0] if e.args else type(e).__name__


def run_main(main, argv=None):
    """Call main(argv); expected errors print `error: ...` and exit 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
    except BrokenPipeError:  # the reader of stdout has gone: Python's documented recipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        sys.exit(1)
    except EXPECTED as e:
        message = error_line(e)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
