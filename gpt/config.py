"""Command-line configuration: one dataclass per script, filled from TOML files and --key=value.

    python train.py configs/shakespeare_char.toml --max_iters=500 --device=cuda

Later sources override earlier ones: the dataclass defaults, then each TOML file in
order, then each --key=value. Values are converted to the field's type; an unknown key
is an error that suggests the closest names. `--help` lists every key, its default and
what it means (taken from the field's `help` metadata).

Each option declares its valid values where it is declared, and `build` checks them before
any work starts: a number's interval in the usual notation, a string's choices.

    learning_rate: float = option(1e-3, "peak learning rate", valid="(0, inf)")
    dropout: float = option(0.0, "dropout probability", valid="[0, 1)")
    device: str = option("cpu", "'cpu' or 'cuda'", valid=("cpu", "cuda"))

A violation is one line naming the option and its range (a ConfigError; the scripts exit 2).
NaN lies in no interval, and infinity only in one that closes at inf. Constraints between
options belong to their script: its config class checks them in `__post_init__`, which
runs when `build` makes the config.

Left out: nested sections, environment-variable overrides.
"""
import dataclasses
import difflib
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


# The run folder every script uses by default: the one `python train.py` with no arguments writes
# (configs/shakespeare_char_cpu.toml's out_dir), so `python train.py && python sample.py` works.
DEFAULT_OUT_DIR = "out-shakespeare-char-cpu"


class ConfigError(ValueError):
    """A bad configuration key or value; the message says which and what to do."""


def option(default, help, valid=None):
    """A dataclass field with its --help text and its valid values.

    `valid` is an interval for a number ("[1, inf)", "(0, 1]": square brackets include the end,
    parentheses leave it out), a tuple of choices for a string, or None (any value of the type).
    """
    if isinstance(valid, str):
        valid = Interval(valid)
    return dataclasses.field(default=default, metadata={"help": help, "valid": valid})


_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])$")


class Interval:
    """The numbers between two ends, each included ([ ]) or not (( )): "(0, 1]" means 0 < x <= 1."""

    def __init__(self, text):
        match = _INTERVAL.match(text)
        if not match:
            raise ValueError(f"interval {text!r}: write it as [low, high], (low, high), [low, high) or (low, high]")
        self.text = text
        self.low, self.high = float(match[2]), float(match[3])
        self.low_open, self.high_open = match[1] == "(", match[4] == ")"

    def __contains__(self, x):
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below  # False for NaN, whose comparisons are all False

    def __str__(self):
        return self.text


def parse(config_cls, argv, prog):
    """Build a `config_cls` from argv (TOML paths and --key=value); exits 0 after --help."""
    asks_help = "-h" in argv or "--help" in argv
    values = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            continue
        if arg.startswith("--"):
            key, sep, raw = arg[2:].partition("=")
            if not sep:
                raise ConfigError(f"{arg}: write options as --{key}=VALUE")
            values[key] = raw
        else:
            values.update(_read_toml(arg))
    if asks_help:
        print(usage(config_cls, prog, values))
        sys.exit(0)
    return build(config_cls, values)


def build(config_cls, values):
    """`config_cls(**values)`, each value converted to its field's type and checked against its valid values."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see --help for the keys"
            raise ConfigError(f"unknown config key '{key}'{hint}")
    converted = {k: _convert(k, v, fields[k]) for k, v in values.items()}
    for key, value in converted.items():
        _check(key, value, fields[key].metadata.get("valid"))
    return config_cls(**converted)


HELP_COLUMN = 32  # --help: where the meaning column starts


def usage(config_cls, prog, values=None):
    """The --help text: every key with the value a run given `values` (from TOML files and
    --key=value) would use, what it means, and its valid values, in two aligned columns.

    A choice list is added only when the help text does not already name every choice, so
    each choice is listed once. A `--key=value` wider than HELP_COLUMN puts its meaning on
    the next line, so one long default does not push every other line out of alignment.
    """
    values = values or {}
    lines = [f"usage: python {prog} [config.toml ...] [--key=value ...]", "",
             "keys (value this run would use: meaning):"]
    for f in dataclasses.fields(config_cls):
        value = _convert(f.name, values[f.name], f) if f.name in values else f.default
        key = f"  --{f.name}={value!r}"
        meaning = f.metadata.get("help", "") + _allowed(f.metadata.get("help", ""), f.metadata.get("valid"))
        if len(key) < HELP_COLUMN:
            lines.append(f"{key:<{HELP_COLUMN}}{meaning}")
        else:
            lines += [key, " " * HELP_COLUMN + meaning]
    return "\n".join(lines)


def _allowed(help, valid):
    """'; in [1, inf)' or '; one of a, b' for --help, or '' when there is nothing new to say."""
    if isinstance(valid, Interval):
        return f"; in {valid}"
    if valid and not all(choice in help for choice in valid):
        return f"; one of {', '.join(valid)}"
    return ""


def _read_toml(path):
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (options are written --key=value)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _check(key, value, valid):
    """Raise a one-line ConfigError unless `value` is among the option's `valid` values."""
    if isinstance(valid, Interval) and value not in valid:
        raise ConfigError(f"{key}={value!r} is out of range: {key} must be in {valid}")
    if isinstance(valid, tuple) and value not in valid:
        raise ConfigError(f"{key}={value!r} is not a choice: {key} must be one of {', '.join(valid)}")


def _convert(key, value, field):
    """Convert a string (from the command line) or TOML value to the field's type."""
    kind = type(field.default) if field.default is not None else str
    if not isinstance(value, str) or kind is str:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is not type(value) and field.default is not None:
            raise ConfigError(f"{key} must be {kind.__name__}, got {value!r}")
        return value
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except ValueError:
        raise ConfigError(f"--{key}={value}: expected {kind.__name__} (default {field.default!r})") from None
