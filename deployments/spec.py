"""The deployment spec: its schema, its validation, and the normalized JSON it becomes.

A spec is what one revision runs: which catalog variant, on which runtime with which
arguments, how many replicas, what resources, where, on which port, with which plain
environment, and how updates roll out. :func:`normalize_spec` checks a raw spec (from the API,
a form or a rollback) and returns the normalized dict every revision stores: every key
present, defaults filled in, runtime arguments cleaned by the runtime's adapter.

Checks that need the database: the variant exists, its format suits the runtime
(``adapter.formats``), and the licence policy allows it (refused with the catalog's reason).
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.errors import ServiceError
from deployments import gates
from deployments.autoscaling import AutoscalingSerializer, check_policy, normalized_defaults
from deployments.choices import PlacementStrategy, Runtime
from deployments.runtimes import get_adapter
from deployments.runtimes.base import ArgumentError, RuntimeAdapter
from deployments.runtimes.custom import IMAGE_PATTERN
from fleet.services import validate_labels
from models_catalog.models import Variant
from models_catalog.services import check_licence

if TYPE_CHECKING:
    from deployments.models import Deployment

MAX_REPLICAS = 64
MAX_ENV = 64
MAX_ENV_VALUE = 4096
MIN_MEMORY_BYTES = 64 * 1024 * 1024
ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Words in a variable's name that say it holds a secret (HF_TOKEN, DB_PASSWORD, …).
SECRET_NAME_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS"}
SECRET_NAME_SUFFIXES = ("API_KEY", "ACCESS_KEY", "PRIVATE_KEY", "AUTH_KEY")
# Values shaped like credentials: Hugging Face tokens, this fleet's own keys, PEM keys.
SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|slm[fjn]_\S{20,}|-----BEGIN [A-Z ]*PRIVATE KEY)")
CLEAR_TEXT_HINT = (
    "plain env is stored in clear in every revision and in the history; secrets do not belong there"
)

STRATEGY_DEFAULTS: dict[str, Any] = {
    "max_surge": 1,
    "max_unavailable": 0,
    "min_healthy_seconds": 10,
    "healthy_deadline_seconds": 300,
    "progress_deadline_seconds": 600,
    "auto_revert": True,
}
SPEC_KEYS = (
    "variant",
    "runtime",
    "image",
    "runtime_args",
    "replicas",
    "resources",
    "placement",
    "port",
    "env",
    "strategy",
    "autoscaling",
)
# What the containers of a revision are made from. A change of anything else but
# ``replicas`` (the update strategy) is still a revision, with nothing to restart for it.
CONTAINER_KEYS = (
    "variant",
    "runtime",
    "image",
    "runtime_args",
    "resources",
    "placement",
    "port",
    "env",
)


class SpecError(ServiceError):
    """A spec that is not valid; ``errors`` holds the per-field messages (nested as sent)."""

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors
        flat = flatten_errors(errors)
        super().__init__(
            "The deployment spec is not valid: "
            + "; ".join(f"{key}: {message}" for key, message in flat.items()),
            field="spec",
        )

    @property
    def flat(self) -> dict[str, str]:
        return flatten_errors(self.errors)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, str]:
    """``{"resources": {"cpus": ["too big"]}}`` → ``{"resources.cpus": "too big"}``."""
    flat: dict[str, str] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            flat.update(flatten_errors(value, f"{prefix}{key}."))
    elif isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
        flat[prefix.rstrip(".") or "spec"] = " ".join(str(e) for e in errors)
    elif isinstance(errors, list):
        for item in errors:
            flat.update(flatten_errors(item, prefix))
    else:
        flat[prefix.rstrip(".") or "spec"] = str(errors)
    return flat


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_bytes(value: Any) -> int:
    """``8589934592``, ``"8G"``, ``"8GiB"``, ``"512M"`` → bytes (G = 10⁹, Gi = 2³⁰)."""
    if isinstance(value, bool):
        raise ValueError("a size such as 8G, 512Mi or a number of bytes")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError("a size such as 8G, 512Mi or a number of bytes")
    number, unit, binary = match.groups()
    power = " kmgt".index(unit.lower() or " ")
    return round(float(number) * ((1024 if binary else 1000) ** power))


@extend_schema_field(
    {"oneOf": [{"type": "integer"}, {"type": "string", "example": "8Gi"}], "nullable": True}
)
class ByteSizeField(serializers.Field):  # type: ignore[type-arg]
    """A size in bytes; also accepts ``"8G"`` / ``"8Gi"`` style strings."""

    default_error_messages = {"invalid": "Give a size such as 8G, 512Mi or a number of bytes."}

    def __init__(self, *, min_value: int = 0, **kwargs: Any) -> None:
        self.min_value = min_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        try:
            size = parse_bytes(data)
        except (TypeError, ValueError):
            self.fail("invalid")
        if size < self.min_value:
            raise serializers.ValidationError(f"At least {self.min_value} bytes.")
        return size

    def to_representation(self, value: Any) -> int:
        return int(value)


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Refuses keys it does not know (a typo must not be dropped silently)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return super().to_internal_value(data)
        known = ", ".join(self.fields)
        errors: dict[str, Any] = {
            key: [f"Unknown field; known: {known}."] for key in sorted(set(data) - set(self.fields))
        }
        try:
            value = super().to_internal_value({k: v for k, v in data.items() if k in self.fields})
        except serializers.ValidationError as exc:
            detail: Any = exc.detail
            errors.update(detail if isinstance(detail, dict) else {"spec": detail})
        if errors:
            raise serializers.ValidationError(errors)
        return value


class ResourcesSerializer(StrictSerializer):
    """What each replica may use."""

    cpus = serializers.FloatField(
        min_value=0.1, max_value=1024, allow_null=True, default=None, help_text="CPU limit."
    )
    memory_bytes = ByteSizeField(
        min_value=MIN_MEMORY_BYTES,
        allow_null=True,
        default=None,
        help_text="Memory limit in bytes (or 8G, 8Gi); empty: none.",
    )
    gpus = serializers.IntegerField(
        min_value=0,
        max_value=16,
        allow_null=True,
        default=None,
        help_text="GPUs per replica; empty: 1 when the runtime needs a GPU, else 0.",
    )


class PlacementSerializer(StrictSerializer):
    """Which nodes replicas may go to, and how they are spread."""

    selector = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        default=dict,
        help_text="Node labels that must all match (key: value).",
    )
    strategy = serializers.ChoiceField(
        choices=PlacementStrategy.choices, default=PlacementStrategy.SPREAD
    )

    def validate_selector(self, value: dict[str, str]) -> dict[str, str]:
        try:
            return validate_labels(value)
        except ServiceError as error:
            raise serializers.ValidationError(error.message) from None


class GateThresholdsSerializer(StrictSerializer):
    """What the new revision must reach, compared with the stable one (ratios) or absolute."""

    min_tokens_per_s_ratio = serializers.FloatField(
        min_value=0,
        max_value=100,
        required=False,
        help_text="New output tokens/s ≥ this × the stable revision's (e.g. 0.95).",
    )
    max_p99_latency_ratio = serializers.FloatField(
        min_value=0.01,
        max_value=100,
        required=False,
        help_text="New p99 end-to-end latency ≤ this × the stable revision's (e.g. 1.10).",
    )
    min_output_tokens_per_s = serializers.FloatField(
        min_value=0, required=False, help_text="New output tokens/s at least this (absolute)."
    )
    min_pass_rate = serializers.FloatField(
        min_value=0, max_value=1, required=False, help_text="Each suite's pass rate floor (0–1)."
    )
    pass_rate_vs_stable = serializers.BooleanField(
        required=False, help_text="Each suite's pass rate ≥ the stable revision's."
    )


class GatesSerializer(StrictSerializer):
    """Measure the new revision before the rollout goes on (docs/benchmarks.md)."""

    benchmark = serializers.SlugField(
        allow_blank=True, default="", help_text="A benchmark profile's name."
    )
    suites = serializers.ListField(
        child=serializers.SlugField(), default=list, max_length=10, help_text="Test suite names."
    )
    thresholds = GateThresholdsSerializer(default=dict)
    timeout_seconds = serializers.IntegerField(min_value=30, max_value=86400, default=1800)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        if not attrs["benchmark"] and not attrs["suites"]:
            errors["benchmark"] = "Name a benchmark profile or test suites (or drop the gates)."
        given = dict(attrs["thresholds"])
        bench_keys = ("min_tokens_per_s_ratio", "max_p99_latency_ratio", "min_output_tokens_per_s")
        suite_keys = ("min_pass_rate", "pass_rate_vs_stable")
        if not attrs["benchmark"] and any(k in given for k in bench_keys):
            errors["thresholds"] = "Serving thresholds need a benchmark profile (benchmark)."
        if not attrs["suites"] and any(k in given for k in suite_keys):
            errors["thresholds"] = "Pass-rate thresholds need test suites (suites)."
        if not any(k in given for k in bench_keys) and attrs["benchmark"]:
            given.update(min_tokens_per_s_ratio=0.95, max_p99_latency_ratio=1.10)
        if not any(k in given for k in suite_keys) and attrs["suites"]:
            given["pass_rate_vs_stable"] = True
        runner = gates.runner()
        if runner is not None and not errors:
            errors.update(runner.unknown(attrs))
        if errors:
            raise serializers.ValidationError(errors)
        attrs["thresholds"] = given
        return attrs


class StrategySerializer(StrictSerializer):
    """How an update rolls out: batches, health gates, deadlines, automatic revert."""

    max_surge = serializers.IntegerField(min_value=0, max_value=MAX_REPLICAS, default=1)
    max_unavailable = serializers.IntegerField(min_value=0, max_value=MAX_REPLICAS, default=0)
    min_healthy_seconds = serializers.IntegerField(min_value=0, max_value=3600, default=10)
    healthy_deadline_seconds = serializers.IntegerField(min_value=10, max_value=86400, default=300)
    progress_deadline_seconds = serializers.IntegerField(min_value=30, max_value=86400, default=600)
    auto_revert = serializers.BooleanField(default=True)
    gates = GatesSerializer(
        required=False,
        help_text="Benchmark and test-suite gates on the new revision; absent: none.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["max_surge"] == 0 and attrs["max_unavailable"] == 0:
            raise serializers.ValidationError(
                {
                    "max_surge": "max_surge and max_unavailable cannot both be 0: no update could "
                    "make progress."
                }
            )
        if attrs["healthy_deadline_seconds"] <= attrs["min_healthy_seconds"]:
            raise serializers.ValidationError(
                {"healthy_deadline_seconds": "Must be longer than min_healthy_seconds."}
            )
        return attrs


class DeploymentSpecSerializer(StrictSerializer):
    """What one revision runs. Every field but ``variant`` and ``runtime`` has a default."""

    variant = serializers.IntegerField(min_value=1, help_text="Catalog variant id.")
    runtime = serializers.ChoiceField(choices=Runtime.choices)
    image = serializers.RegexField(
        rf"^{IMAGE_PATTERN}$",
        max_length=255,
        allow_blank=True,
        default="",
        help_text="Container image; empty: this install's image for the runtime.",
    )
    runtime_args = serializers.DictField(
        default=dict, help_text="Checked by the runtime's adapter; see docs/runtimes.md."
    )
    replicas = serializers.IntegerField(min_value=0, max_value=MAX_REPLICAS, default=1)
    resources = ResourcesSerializer(default=dict)
    placement = PlacementSerializer(default=dict)
    port = serializers.IntegerField(
        min_value=1024,
        max_value=65535,
        allow_null=True,
        default=None,
        help_text="Fixed host port; empty: placement gives each replica one from the range.",
    )
    env = serializers.DictField(
        child=serializers.CharField(
            allow_blank=True, max_length=MAX_ENV_VALUE, trim_whitespace=False
        ),
        default=dict,
        help_text="Plain environment variables (no secrets).",
    )
    strategy = StrategySerializer(default=dict)
    autoscaling = AutoscalingSerializer(
        default=dict,
        help_text="Off by default; when on, the autoscaler sets the replica count "
        "(docs/autoscaling.md).",
    )

    def to_internal_value(self, data: Any) -> Any:
        # Nested parts that are absent get their defaults filled in by their own serializer.
        if isinstance(data, dict):
            data = {
                **{key: {} for key in ("resources", "placement", "strategy", "autoscaling")},
                **{k: v for k, v in data.items() if v is not None or k == "port"},
            }
        return super().to_internal_value(data)

    def _adapter(self) -> RuntimeAdapter | None:
        runtime = self.initial_data.get("runtime") if isinstance(self.initial_data, dict) else None
        return get_adapter(runtime) if runtime in Runtime.values else None

    def validate_runtime_args(self, args: dict[str, Any]) -> dict[str, Any]:
        adapter = self._adapter()
        if adapter is None:
            return args
        try:
            return adapter.validate_args(dict(args))
        except ArgumentError as exc:
            raise serializers.ValidationError(exc.errors) from None

    def validate_env(self, env: dict[str, str]) -> dict[str, str]:
        env = check_env(env)
        adapter_check = getattr(self._adapter(), "validate_env", None)
        if callable(adapter_check) and env:
            try:
                env = dict(sorted(adapter_check(env).items()))
            except ArgumentError as exc:
                raise serializers.ValidationError(
                    {key.removeprefix("env."): msg for key, msg in exc.errors.items()}
                ) from None
        return env

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        variant = Variant.objects.select_related("model").filter(pk=attrs["variant"]).first()
        adapter = get_adapter(attrs["runtime"])
        if variant is None:
            raise serializers.ValidationError(
                {"variant": f"No catalog variant #{attrs['variant']}."}
            )
        if variant.format not in adapter.formats:
            errors["runtime"] = (
                f"{adapter.label or adapter.name} serves {', '.join(adapter.formats)} variants; "
                f"{variant} is {variant.format}."
            )
        refusal = check_licence(variant)
        if refusal:
            errors["variant"] = f"Refused by the licence policy: {refusal}."
        if attrs["image"] and "image" in _arg_names(adapter):
            errors["image"] = f"Give the {adapter.label or adapter.name} image in runtime_args."
        resources = dict(attrs["resources"])
        gpu_error = _resolve_gpus(adapter, attrs["runtime_args"], resources)
        if gpu_error:
            errors["resources"] = {"gpus": gpu_error}
        attrs["resources"] = resources
        policy = dict(attrs["autoscaling"])
        policy_errors = check_policy(
            policy, adapter, attrs["runtime_args"], int(resources.get("gpus") or 0)
        )
        if policy_errors:
            errors["autoscaling"] = policy_errors
        attrs["autoscaling"] = policy
        if policy["enabled"] and not policy_errors:
            attrs["replicas"] = max(
                policy["min_replicas"], min(policy["max_replicas"], attrs["replicas"])
            )
        if errors:
            raise serializers.ValidationError(errors)
        memory_error = _memory_limit_error(variant, adapter, attrs)
        if memory_error:
            raise serializers.ValidationError({"resources": {"memory_bytes": memory_error}})
        return attrs


def check_env(env: dict[str, str]) -> dict[str, str]:
    """Plain env: POSIX-style upper-case names, no FLEET_* and nothing that holds a secret."""
    if len(env) > MAX_ENV:
        raise serializers.ValidationError(f"At most {MAX_ENV} variables.")
    errors: dict[str, str] = {}
    for key, value in env.items():
        if not ENV_KEY.match(key):
            errors[key] = "Names are upper-case letters, digits and _, not starting with a digit."
        elif key.startswith("FLEET_"):
            errors[key] = "FLEET_* variables belong to the platform."
        elif set(key.split("_")) & SECRET_NAME_WORDS or key.endswith(SECRET_NAME_SUFFIXES):
            errors[key] = f"{key} names a secret: {CLEAR_TEXT_HINT}."
        elif SECRET_VALUE.match(value):
            errors[key] = f"The value looks like a credential: {CLEAR_TEXT_HINT}."
        elif "\x00" in value:
            errors[key] = "Values cannot hold NUL characters."
    if errors:
        raise serializers.ValidationError(errors)
    return dict(sorted(env.items()))


def _arg_names(adapter: RuntimeAdapter) -> list[str]:
    schema = getattr(adapter, "schema", None)
    return list(schema.names) if schema is not None else []


def _resolve_gpus(adapter: RuntimeAdapter, args: dict[str, Any], resources: dict[str, Any]) -> str:
    """Fill ``resources["gpus"]`` when left empty (the runtime's tensor parallelism, else 1
    when it needs a GPU, else 0); an error message when the figures disagree."""
    from deployments.placement import gpu_count

    label = adapter.label or adapter.name
    asked = resources.get("gpus")
    parallel = args.get("tensor_parallel_size")
    if asked is None:
        resources["gpus"] = gpu_count(adapter, args, {**resources, "gpus": 0})
        return ""
    if asked == 0 and adapter.needs_gpu(args, resources):
        return f"{label} needs at least one GPU with these arguments."
    if parallel and asked != parallel:
        return f"{label} uses tensor_parallel_size = {parallel} GPUs; ask for as many."
    return ""


def _memory_limit_error(variant: Variant, adapter: RuntimeAdapter, attrs: dict[str, Any]) -> str:
    """A CPU replica whose memory limit is below its footprint would be killed at start."""
    limit = attrs["resources"].get("memory_bytes")
    if not limit:
        return ""
    from deployments.placement import demand_for

    demand = demand_for(attrs, variant, adapter=adapter)
    if demand.device != "cpu" or demand.bytes <= limit:
        return ""
    return (
        f"Below the footprint of {variant} at context {demand.context} "
        f"({demand.bytes / 1e9:.1f} GB): the container would run out of memory."
    )


def normalize_spec(raw: Any) -> dict[str, Any]:
    """The normalized spec for ``raw``, or :class:`SpecError` with every problem found."""
    if not isinstance(raw, dict):
        raise SpecError({"spec": ["Must be an object."]})
    serializer = DeploymentSpecSerializer(data=raw)
    if not serializer.is_valid():
        raise SpecError(_plain(serializer.errors))
    data = _plain(serializer.validated_data)
    return {key: data[key] for key in SPEC_KEYS}


def _plain(value: Any) -> Any:
    """DRF's ReturnDict / ErrorDetail / OrderedDict as plain JSON-safe values."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, str):  # ErrorDetail, TextChoices members
        return str(value)
    return value


def merge_spec(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` applied to ``current`` as a JSON merge patch (RFC 7396): objects merge,
    ``null`` removes a key (its default applies again), anything else replaces.

    Changing the runtime replaces ``runtime_args`` wholesale: one runtime's arguments mean
    nothing to another.
    """
    if not isinstance(changes, dict):
        raise SpecError({"spec": ["Send the changes as an object."]})
    merged = _merge(copy.deepcopy(current), changes)
    if "runtime" in changes and changes["runtime"] != current.get("runtime"):
        merged["runtime_args"] = copy.deepcopy(changes.get("runtime_args") or {})
    return merged


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def flatten_spec(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``resources.cpus``), for readable diffs; an empty
    object has no keys (adding ``env.A`` to ``{}`` is one change, not two)."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(flatten_spec(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def template(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without ``replicas``: what makes a revision different from another (scaling
    is not a revision, as in Kubernetes)."""
    return {key: value for key, value in spec.items() if key != "replicas"}


def current_spec(deployment: Deployment) -> dict[str, Any]:
    """The current revision's spec with the replica count wanted now."""
    spec = deployment.spec
    if spec:
        spec["replicas"] = deployment.desired_replicas
        spec.setdefault("autoscaling", normalized_defaults())  # revisions made before it
    return spec


def same_containers(spec: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two revisions' replicas would run the same containers (for the reconciler:
    a revision that only changed the update strategy needs no restart)."""
    return all(spec.get(key) == other.get(key) for key in CONTAINER_KEYS)


def runtime_help() -> dict[str, dict[str, Any]]:
    """Per runtime: its label, the variant formats it serves and its known arguments."""
    helps: dict[str, dict[str, Any]] = {}
    for value, label in Runtime.choices:
        adapter = get_adapter(value)
        schema = getattr(adapter, "schema", None)
        helps[value] = {
            "label": label,
            "formats": list(adapter.formats),
            "args": schema.describe() if schema is not None else [],
        }
    return helps
