"""Values reaching `TrainerConfig` from outside: the strict YAML reader and the type check of every field.

YAML files are read with these rules, each a ``ConfigError`` naming the file (and line) otherwise:

- the file must be UTF-8 text (a BOM is allowed); a bad byte is named by line and column;
- the same key twice in one mapping is an error naming the key and both lines (PyYAML keeps the last silently);
- an empty file, or one holding only ``null``, is an error: running the defaults instead would hide a mistake;
- **numbers written as strings are read as numbers for float fields only.** PyYAML follows YAML 1.1, where a
  float needs a dot, so ``learning_rate: 1e-5`` arrives as the string ``'1e-5'``. That is a quirk of the YAML
  version, not the user's mistake, so a float field's string value that is written like a decimal number
  (``1e-5``, ``'0.1'``, ``+2E3``; no ``inf``/``nan``, no ``_``) is converted with ``float()``. Nothing else is
  converted: ``bf16: 'false'`` is an error, not False (and certainly not True, as a non-empty string would be).

The type check (``check_field_types``) runs first in ``TrainerConfig.__post_init__``: a field annotated ``bool``
takes only True/False, ``int`` only integers (not ``1.7``, not ``2.0``, not True), ``float`` any int or float (not
a bool or a string), ``str`` only strings; ``None`` only where the annotation allows it. Value ranges and
combinations are checked afterwards by ``TrainerConfig._validate``.

Not covered: list and dict fields (``reward_weights``, ``report_to``, ``trl_kwargs``, ``lora_target_modules``)
have their own checks in ``config.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .common.errors import ConfigError, decode_position

_SCALARS = (bool, int, float, str)
# A decimal number, optionally signed, with an optional exponent: what float() reads that a person writes.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@lru_cache(maxsize=None)
def field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """``{field: (scalar type, None allowed)}`` for the dataclass fields annotated with a scalar (or scalar | None)."""
    kinds: dict[str, tuple[type, bool]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _SCALARS:
            kinds[name] = (rest[0], optional)
    return kinds


def check_field_types(config: Any) -> None:
    """ConfigError naming the first field whose value has the wrong type (see the module docstring)."""
    for f in dataclasses.fields(config):
        kind = field_kinds(type(config)).get(f.name)
        if kind is None:
            continue
        expected, optional = kind
        value = getattr(config, f.name)
        if value is None:
            if optional:
                continue
            raise ConfigError(f"{f.name}=None is not allowed: it must be {_describe(expected)}")
        if not _is_instance(value, expected):
            raise ConfigError(f"{f.name}={value!r} ({type(value).__name__}) must be {_describe(expected)}"
                              + (" or None" if optional else "") + _hint(expected, value))


def _is_instance(value: Any, expected: type) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[expected]


def _hint(expected: type, value: Any) -> str:
    if expected is bool and isinstance(value, str):
        return (" (a boolean, unquoted in YAML: true/false; strings are not converted, since any non-empty string, "
                "'false' and 'no' included, would count as True)")
    if expected is int and isinstance(value, float):
        return f" (a whole number such as {max(1, round(value))}, without a decimal point)"
    if expected is float and isinstance(value, str):
        return " (not a string; e.g. 1e-5 or 0.00001)"
    return ""


# --------------------------------------------------------------------------------------------- YAML


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"key {key!r} appears twice (lines {first_line} and {line})")
        self.key, self.first_line, self.line = key, first_line, line


class StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a mapping with the same key twice raises instead of keeping the last."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges keys that explicit keys may override: that is YAML, not a duplicate
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        except TypeError:
            continue  # an unhashable key: SafeLoader's own error follows
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_yaml(path: str | Path, cls: type) -> Any:
    """The mapping in a TrainerConfig YAML file, float fields' numeric strings converted (see module docstring)."""
    path = Path(path)
    where = f"config file {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text: cannot decode {decode_position(raw, exc)}; save it as "
                          "UTF-8") from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: {exc}; the last one would silently win. Keep one {exc.key!r}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"{where} is empty; expected a mapping of TrainerConfig fields (e.g. `trainer_type: grpo`)")
    if not isinstance(data, dict):
        return data  # TrainerConfig.from_dict names the type it got
    kinds = field_kinds(cls)
    for key, value in data.items():
        if kinds.get(key, (None,))[0] is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            data[key] = float(value)
    return data


def check_report_to(report_to: Any) -> None:
    """ConfigError unless ``report_to`` is a list of integration names transformers knows."""
    if not isinstance(report_to, list) or not all(isinstance(r, str) for r in report_to):
        raise ConfigError(f"report_to={report_to!r}: give a list of integration names, e.g. ['tensorboard'] or ['none']")
    if set(report_to) <= {"none", "all", "tensorboard"}:
        return
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    accepted = ["none", "all", *sorted(INTEGRATION_TO_CALLBACK)]
    bad = [r for r in report_to if r not in accepted]
    if bad:
        raise ConfigError(f"report_to={report_to!r}: {bad} not known; accepted integrations: {', '.join(accepted)}")


# --- validation helpers (TrainerConfig._validate_*) ------------------------------------------------------------

def one_of(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"{name}={value!r} is not supported; accepted values: {', '.join(accepted)}")


def int_at_least(name: str, value: Any, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}" + (f" ({why})" if why else ""))


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def positive(name: str, value: Any) -> None:
    if not is_number(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a finite number > 0")


def non_negative(name: str, value: Any) -> None:
    if not is_number(value) or value < 0:
        raise ConfigError(f"{name}={value!r} must be a finite number >= 0")
