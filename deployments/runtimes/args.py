"""A small declarative schema for runtime arguments, shared by the adapters.

Each runtime declares its arguments as :class:`Arg` rows (type, range, choices, the CLI flag
it maps to) plus the keys it refuses, with the reason. :meth:`ArgSchema.clean` checks a
deployment's ``runtime_args`` against it and returns the cleaned arguments (canonical names,
coerced types; defaults are *not* filled in: the adapter resolves them, since some depend on
the model or the resources). Every problem is collected and raised at once as one
:class:`~deployments.runtimes.base.ArgumentError` keyed by the argument the user wrote.

Keys are matched loosely, the way people type them: ``ctx-size``, ``--ctx-size`` and
``ctx_size`` are the same key. Cleaning is idempotent: cleaned arguments clean to themselves.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from deployments.runtimes.base import ArgumentError, RuntimeAdapter

ArgKind = Literal["int", "float", "str", "bool", "enum", "strings", "mapping"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VALUE = 4096

# Environment variables no deployment may set, whatever the runtime.
REFUSED_ENV: dict[str, str] = {
    "HF_TOKEN": "no Hugging Face token goes into a container: models are served from the "
    "node's hub cache",
    "HUGGING_FACE_HUB_TOKEN": "no Hugging Face token goes into a container: models are "
    "served from the node's hub cache",
    "HF_HUB_OFFLINE": "set by the platform",
    "HF_ENDPOINT": "containers never download models; the agent does",
    "LD_PRELOAD": "loads arbitrary libraries into the server process",
}


class InvalidValue(ValueError):
    """One argument's value is wrong; the message says why (no key, no runtime)."""


def normalise_key(key: str) -> str:
    """``--ctx-size`` / ``ctx-size`` / ``CTX_SIZE`` → ``ctx_size``."""
    return key.strip().lstrip("-").replace("-", "_").lower()


@dataclass(frozen=True)
class Arg:
    """One argument a runtime accepts."""

    name: str
    kind: ArgKind
    description: str
    flag: str | None = None  # the CLI flag it maps to; None: the adapter uses it otherwise
    negative_flag: str | None = None  # bool only: the flag for ``False`` (else nothing)
    default: Any = None  # documentation: what the adapter uses when it is absent
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # str / strings items / mapping values must match it
    max_length: int = 256  # str / strings items / mapping values
    max_items: int = 64  # strings / mapping
    key_pattern: str | None = None  # mapping keys (when ``fields`` is None)
    fields: ArgSchema | None = None  # mapping: a nested schema for its keys and values
    split: bool = False  # strings: a single string is split with shell rules
    required: bool = False
    aliases: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None  # extra rule: an error message or None

    def clean(self, value: Any) -> Any:
        cleaned = _CLEANERS[self.kind](self, value)
        if self.check is not None:
            message = self.check(cleaned)
            if message:
                raise InvalidValue(message)
        return cleaned

    def to_cli(self, value: Any) -> list[str]:
        if self.flag is None:
            return []
        if self.kind == "bool":
            if value:
                return [self.flag]
            return [self.negative_flag] if self.negative_flag else []
        if self.kind in ("strings", "mapping"):
            raise TypeError(f"{self.name}: {self.kind} arguments have no single CLI flag")
        return [self.flag, format_value(value)]

    def describe(self) -> dict[str, Any]:
        """For docs, the API and the console's form."""
        row: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "description": self.description,
        }
        for key in ("flag", "default", "minimum", "maximum"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        if self.required:
            row["required"] = True
        if self.choices:
            row["choices"] = list(self.choices)
        if self.aliases:
            row["aliases"] = list(self.aliases)
        if self.fields is not None:
            row["fields"] = self.fields.describe()
        return row


@dataclass(frozen=True)
class ArgSchema:
    """The arguments of one runtime (or of one nested mapping), and the keys it refuses."""

    runtime: str  # as users read it in messages: "llama.cpp", "vLLM", "Ollama PARAMETER"
    args: tuple[Arg, ...]
    refused: Mapping[str, str] = field(default_factory=dict)  # normalised key -> reason
    _index: dict[str, Arg] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, Arg] = {}
        for arg in self.args:
            for key in (arg.name, *arg.aliases):
                normal = normalise_key(key)
                if normal in index or normal in self.refused:
                    raise ValueError(f"{self.runtime}: argument key {key!r} declared twice")
                index[normal] = arg
        object.__setattr__(self, "_index", index)

    @property
    def names(self) -> list[str]:
        return [arg.name for arg in self.args]

    def arg(self, name: str) -> Arg:
        return self._index[normalise_key(name)]

    def clean(self, raw: Mapping[str, Any] | None, *, prefix: str = "") -> dict[str, Any]:
        """Cleaned arguments, or :class:`ArgumentError` naming each bad key and why.

        A ``None`` value means "use the default" and is dropped.
        """
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise ArgumentError(
                {prefix.rstrip(".") or "args": "must be an object of argument names to values"}
            )
        errors: dict[str, str] = {}
        cleaned: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for key, value in raw.items():
            label = f"{prefix}{key}"
            if not isinstance(key, str) or not key.strip():
                errors[label] = "argument names are non-empty strings"
                continue
            normal = normalise_key(key)
            if normal in self.refused:
                errors[label] = f"refused for {self.runtime}: {self.refused[normal]}"
                continue
            arg = self._index.get(normal)
            if arg is None:
                errors[label] = (
                    f"unknown argument '{key}' for {self.runtime}; known: {', '.join(self.names)}"
                )
                continue
            if arg.name in seen:
                errors[label] = f"given twice ('{seen[arg.name]}' and '{key}')"
                continue
            seen[arg.name] = key
            if value is None:
                continue
            if arg.kind == "mapping" and arg.fields is not None:
                try:
                    cleaned[arg.name] = _clean_nested(arg, value, f"{label}.")
                except ArgumentError as exc:
                    errors.update(exc.errors)
                continue
            try:
                cleaned[arg.name] = arg.clean(value)
            except InvalidValue as exc:
                errors[label] = str(exc)
        for arg in self.args:
            if arg.required and arg.name not in seen:
                errors[f"{prefix}{arg.name}"] = f"required for {self.runtime}"
        if errors:
            raise ArgumentError(errors)
        return cleaned

    def cli(self, cleaned: Mapping[str, Any], *, only: Iterable[str] | None = None) -> list[str]:
        """The CLI flags for the cleaned arguments that map to one, in declaration order."""
        wanted = set(only) if only is not None else None
        command: list[str] = []
        for arg in self.args:
            if arg.flag is None or arg.name not in cleaned:
                continue
            if wanted is not None and arg.name not in wanted:
                continue
            command += arg.to_cli(cleaned[arg.name])
        return command

    def describe(self) -> list[dict[str, Any]]:
        return [arg.describe() for arg in self.args]


def clean_env(
    env: Mapping[str, Any] | None,
    *,
    runtime: str,
    refused: Mapping[str, str] | None = None,
    refused_prefixes: Mapping[str, str] | None = None,
    prefix: str = "env.",
) -> dict[str, str]:
    """Environment variables for a container, or :class:`ArgumentError` for each bad one."""
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ArgumentError({prefix.rstrip("."): "must be an object of names to values"})
    refused_all = {**REFUSED_ENV, **(refused or {})}
    errors: dict[str, str] = {}
    cleaned: dict[str, str] = {}
    for name, value in env.items():
        label = f"{prefix}{name}"
        if not isinstance(name, str) or not ENV_NAME.match(name):
            errors[label] = "variable names are letters, digits and underscores"
            continue
        upper = name.upper()
        if upper in refused_all:
            errors[label] = f"refused for {runtime}: {refused_all[upper]}"
            continue
        hit = next((p for p in (refused_prefixes or {}) if upper.startswith(p)), None)
        if hit is not None:
            errors[label] = f"refused for {runtime}: {(refused_prefixes or {})[hit]}"
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            errors[label] = "values are text (or numbers)"
            continue
        text = str(value)
        if len(text) > MAX_ENV_VALUE or "\x00" in text:
            errors[label] = f"values are at most {MAX_ENV_VALUE} characters, without NUL"
            continue
        cleaned[name] = text
    if errors:
        raise ArgumentError(errors)
    return cleaned


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SchemaAdapter(RuntimeAdapter):
    """A runtime adapter whose arguments are declared by an :class:`ArgSchema`."""

    schema: ArgSchema
    image_setting: str = ""  # the Django setting naming this install's image
    fallback_image: str = ""  # the official image, when the setting is absent
    env_refused: Mapping[str, str] = {}
    env_refused_prefixes: Mapping[str, str] = {}
    health_path: str = "/health"  # what the agent probes (the spec carries it)
    metrics_path: str | None = "/metrics"  # Prometheus text, or None
    metric_names: tuple[str, ...] = ()  # what monitoring's normalisation can expect

    def default_image(self) -> str:
        from django.conf import settings

        if not self.image_setting:
            return self.fallback_image
        return str(getattr(settings, self.image_setting, "") or self.fallback_image)

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.schema.clean(args)

    def validate_env(self, env: Mapping[str, Any] | None) -> dict[str, str]:
        """The deployment's environment variables, refusing the ones the platform owns."""
        return clean_env(
            env,
            runtime=self.schema.runtime,
            refused=self.env_refused,
            refused_prefixes=self.env_refused_prefixes,
        )

    def describe_args(self) -> list[dict[str, Any]]:
        return self.schema.describe()


# ---------------------------------------------------------------------------- cleaners


def _number(arg: Arg, value: Any, *, whole: bool) -> int | float:
    what = "a whole number" if whole else "a number"
    if isinstance(value, bool):
        raise InvalidValue(f"must be {what}, not true/false")
    number: int | float
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"must be {what}")
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            number = _float_or_none(text)
        if isinstance(number, float) and not math.isfinite(number):
            raise InvalidValue(f"must be {what}, got {value!r}")
    else:
        raise InvalidValue(f"must be {what}")
    if whole:
        if isinstance(number, float):
            if not number.is_integer():
                raise InvalidValue(f"must be {what}, got {value!r}")
            number = int(number)
    else:
        number = float(number)
    if arg.minimum is not None and number < arg.minimum:
        raise InvalidValue(f"must be at least {format_value(arg.minimum)}, got {number}")
    if arg.maximum is not None and number > arg.maximum:
        raise InvalidValue(f"must be at most {format_value(arg.maximum)}, got {number}")
    return number


def _float_or_none(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _clean_int(arg: Arg, value: Any) -> int:
    return int(_number(arg, value, whole=True))


def _clean_float(arg: Arg, value: Any) -> float:
    return float(_number(arg, value, whole=False))


def _clean_bool(arg: Arg, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidValue("must be true or false")


def _text(arg: Arg, value: Any, what: str = "must be text") -> str:
    if not isinstance(value, str):
        raise InvalidValue(what)
    if "\x00" in value:
        raise InvalidValue("must not contain NUL characters")
    if len(value) > arg.max_length:
        raise InvalidValue(f"must be at most {arg.max_length} characters")
    if arg.pattern is not None and not re.fullmatch(arg.pattern, value):
        raise InvalidValue(f"{value[:60]!r} is not allowed here (expected {arg.description})")
    return value


def _clean_str(arg: Arg, value: Any) -> str:
    return _text(arg, value)


def _clean_enum(arg: Arg, value: Any) -> str:
    if isinstance(value, str) and value in arg.choices:
        return value
    if isinstance(value, str):
        # Be forgiving about case where the choices are all lower-case.
        lowered = value.strip().lower()
        if lowered in arg.choices:
            return lowered
    raise InvalidValue(f"must be one of: {', '.join(arg.choices)}; got {value!r}")


def _clean_strings(arg: Arg, value: Any) -> list[str]:
    if isinstance(value, str):
        if arg.split:
            try:
                value = shlex.split(value)
            except ValueError as exc:
                raise InvalidValue(f"cannot be split into words: {exc}") from None
        else:
            value = [value]
    if not isinstance(value, list | tuple):
        raise InvalidValue("must be a list of strings")
    if len(value) > arg.max_items:
        raise InvalidValue(f"must have at most {arg.max_items} items")
    return [_text(arg, item, "every item must be text") for item in value]


def _clean_mapping(arg: Arg, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidValue("must be an object of names to values")
    if len(value) > arg.max_items:
        raise InvalidValue(f"must have at most {arg.max_items} entries")
    cleaned: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or (
            arg.key_pattern is not None and not re.fullmatch(arg.key_pattern, key)
        ):
            raise InvalidValue(f"key {key!r} is not allowed")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise InvalidValue(f"value of {key!r} must be text")
        cleaned[key] = _text(arg, str(item), f"value of {key!r} must be text")
    return cleaned


def _clean_nested(arg: Arg, value: Any, prefix: str) -> dict[str, Any]:
    assert arg.fields is not None
    if not isinstance(value, Mapping):
        raise ArgumentError({prefix.rstrip("."): "must be an object of names to values"})
    if len(value) > arg.max_items:
        raise ArgumentError({prefix.rstrip("."): f"must have at most {arg.max_items} entries"})
    return arg.fields.clean(value, prefix=prefix)


_CLEANERS: dict[str, Callable[[Arg, Any], Any]] = {
    "int": _clean_int,
    "float": _clean_float,
    "str": _clean_str,
    "bool": _clean_bool,
    "enum": _clean_enum,
    "strings": _clean_strings,
    "mapping": _clean_mapping,
}
