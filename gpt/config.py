"""Command-line configuration: one dataclass per script, filled from TOML files and --key=value.

    python train.py configs/shakespeare_char.toml --max_iters=500 --device=cuda

Later sources override earlier ones: the dataclass defaults, then each TOML file in
order, then each --key=value. Values are converted to the field's type; an unknown key
is an error that suggests the closest names. `--help` lists every key, its default and
what it means (taken from the field's `help` metadata).

Left out: nested sections, environment-variable overrides.
"""
import dataclasses
import difflib
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad configuration key or value; the message says which and what to do."""


def option(default, help):
    """A dataclass field with its --help text."""
    return dataclasses.field(default=default, metadata={"help": help})


def parse(config_cls, argv, prog):
    """Build a `config_cls` from argv (TOML paths and --key=value); exits 0 after --help."""
    if "-h" in argv or "--help" in argv:
        print(usage(config_cls, prog))
        sys.exit(0)
    values = {}
    for arg in argv:
        if arg.startswith("--"):
            key, sep, raw = arg[2:].partition("=")
            if not sep:
                raise ConfigError(f"{arg}: write options as --{key}=VALUE")
            values[key] = raw
        else:
            values.update(_read_toml(arg))
    return build(config_cls, values)


def build(config_cls, values):
    """`config_cls(**values)` with each value converted to its field's type."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see --help for the keys"
            raise ConfigError(f"unknown config key '{key}'{hint}")
    return config_cls(**{k: _convert(k, v, fields[k]) for k, v in values.items()})


def usage(config_cls, prog):
    lines = [f"usage: python {prog} [config.toml ...] [--key=value ...]", "", "keys (default: meaning):"]
    for f in dataclasses.fields(config_cls):
        lines.append(f"  --{f.name}={f.default!r:<12} {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _read_toml(path):
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (options are written --key=value)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


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
