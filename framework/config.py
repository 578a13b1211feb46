"""YAML configs whose keys are train.py's flag names (timm's convention), checked strictly.

``parse_args(parser, argv)`` parses ``-c/--config`` first, loads the YAML as the parser's defaults (``_`` and ``-``
are both accepted in keys), rejects an unknown key or a value of the wrong type naming the key and the file, then
parses the rest of the command line, which wins. ``write_config`` saves the resolved config as ``args.yaml``.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Any, Optional, Sequence

import yaml

from .io import atomic_write


class ConfigError(ValueError):
    """A configuration that cannot run: the message says what is wrong and what to do."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors (an unknown flag, a value of the wrong type, a bad choice) raise
    :class:`ConfigError` with one line naming the flag, instead of printing the whole usage text and exiting: the
    caller prints it as every other refusal (``error: ...``, exit 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise ConfigError(f"{_one_line(message)}; see `python {self.prog} --help`")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` as a user means it: ``1e-3`` is a number (YAML 1.2; PyYAML's YAML 1.1 reads an exponent
    without a dot as a string), and a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: SafeConstructor refuses it below
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice (keep one)", key_node.start_mark)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` with :class:`_Loader`'s two changes (exponents, duplicate keys)."""
    return yaml.load(stream, Loader=_Loader)


def yaml_mapping(text: str) -> dict:
    """argparse ``type`` for ``--sched-kwargs``: a YAML/JSON mapping given on the command line."""
    try:
        value = load_yaml(text) if isinstance(text, str) else text
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"not valid YAML ({_one_line(e)}); give a mapping such as "
                                         "'{fit_steps: 50}'") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{key: value}}', got {text!r}")
    return value


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` with the YAML of ``-c/--config`` as defaults; the command line overrides the file."""
    pre = OneLineParser(prog=parser.prog, add_help=False)
    pre.add_argument("-c", "--config", default=None)
    known, rest = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config(parser, known.config))
    args = parser.parse_args(rest)
    args.config = known.config
    return args


def load_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """Read the YAML ``path`` and return ``{dest: value}`` checked against the parser's flags."""
    if os.path.isdir(path):
        raise ConfigError(f"config file {path!r} is a directory; give a YAML file (e.g. "
                          "configs/fashion_mnist_demo.yaml)")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {_one_line(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                          f"offset {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {path!r} cannot be read: {e.strerror or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must be a mapping of flag names to values, got {type(data).__name__}")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    out, keys = {}, {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"unknown key {key!r} in config file {path!r}; the keys are train.py's flag names "
                              f"(see `python train.py --help`)")
        if dest in keys:
            raise ConfigError(f"config file {path!r} sets one setting twice, as {keys[dest]!r} and {key!r}; keep one")
        keys[dest] = key
        out[dest] = _check_value(actions[dest], key, value, path)
    return out


def _check_value(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """Type-check one YAML value against the flag's argparse action (type, nargs, choices, booleans)."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"key {key!r} in config file {path!r} must be {expected}, got {value!r} "
                           f"({type(value).__name__})")

    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction)):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if value is None:
        if action.default is None:
            return None
        raise bad("set (null is not allowed here)")
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise bad(f"a list of {action.nargs} values")
        return [_check_scalar(action, v, bad) for v in value]
    return _check_scalar(action, value, bad)


def _check_scalar(action: argparse.Action, value: Any, bad) -> Any:
    kind = action.type
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        value = float(value)
    elif kind is yaml_mapping:
        if not isinstance(value, dict):
            raise bad("a mapping")
    elif kind in (None, str):
        if not isinstance(value, str):
            raise bad("a string")
    if action.choices is not None and value not in action.choices:
        raise bad(f"one of {list(action.choices)}")
    return value


def write_config(args: argparse.Namespace, path: str) -> None:
    """Write the resolved config (every flag, in kebab-case like the YAML files) to ``path``."""
    data = {k.replace("_", "-"): (list(v) if isinstance(v, tuple) else v) for k, v in sorted(vars(args).items())}
    atomic_write(path, lambda f: yaml.safe_dump(data, f, sort_keys=False))
