"""Knative Serving's admission rules for the fields the shop uses: the local runtime refuses what the cluster would.

The webhook `validation.webhook.serving.knative.dev` checks a Knative Service after defaulting it;
the rules below are its rules for the fields the manifests under knative/ use, with its default
cluster configuration (config-defaults, config-autoscaler, config-features) and its wording
(knative.dev/pkg apis.FieldError: "<message>: <field path>", errors sorted, one per line):

- autoscaling annotations: class, min-scale / max-scale (max below min), initial-scale, target,
  target-utilization-percentage, window (6s to 1h, whole seconds), metric, panic window and
  threshold, scale-down-delay, scale-to-zero-pod-retention-period;
- containerConcurrency (0 to 1000) and timeoutSeconds (0 to 600);
- environment variables Knative sets itself (PORT, K_SERVICE, K_CONFIGURATION, K_REVISION);
- volumes (secret, configMap, projected, emptyDir; persistentVolumeClaim is off by default) and
  their mounts; probes (the fields Knative allows, one handler, a named port that is the
  container's, the readiness probe's bounds).

`admit()` raises `Refused`, whose message is what `kubectl apply` would print.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEBHOOK = "validation.webhook.serving.knative.dev"
INT32_MAX = 2**31 - 1

# config-defaults and config-autoscaler as Knative ships them.
MAX_REVISION_TIMEOUT_SECONDS = 600
CONTAINER_CONCURRENCY_MAX = 1000
WINDOW_MIN_SECONDS, WINDOW_MAX_SECONDS = 6.0, 3600.0
TARGET_MIN = 0.01
PANIC_WINDOW_PERCENTAGE = (1.0, 100.0)
PANIC_THRESHOLD_PERCENTAGE = (110.0, 1000.0)
ALLOW_ZERO_INITIAL_SCALE = False

RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")
RESERVED_MOUNT_PATHS = ("/", "/dev", "/dev/log")
# config-features: emptyDir volumes on, persistent volume claims off.
VOLUME_SOURCES = ("secret", "configMap", "projected", "emptyDir")
PROBE_FIELDS = frozenset(
    {"initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"}
)
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
HANDLER_FIELDS = {
    "httpGet": frozenset({"host", "path", "scheme", "httpHeaders", "port"}),
    "tcpSocket": frozenset({"host", "port"}),
    "exec": frozenset({"command"}),
    "grpc": frozenset({"port", "service"}),
}

KPA, HPA = "kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"
ANNOTATION_PREFIX = "autoscaling.knative.dev/"
# Current key first, then the older spelling Knative still reads.
ANNOTATION_KEYS = {
    "class": ("class",),
    "min-scale": ("min-scale", "minScale"),
    "max-scale": ("max-scale", "maxScale"),
    "initial-scale": ("initial-scale", "initialScale"),
    "target": ("target",),
    "target-utilization-percentage": ("target-utilization-percentage", "targetUtilizationPercentage"),
    "window": ("window",),
    "metric": ("metric",),
    "panic-window-percentage": ("panic-window-percentage", "panicWindowPercentage"),
    "panic-threshold-percentage": ("panic-threshold-percentage", "panicThresholdPercentage"),
    "scale-down-delay": ("scale-down-delay", "scaleDownDelay"),
    "scale-to-zero-pod-retention-period": ("scale-to-zero-pod-retention-period",),
}

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_GO_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


@dataclass(frozen=True)
class FieldError:
    """One of the webhook's errors: a message, the fields it is about, and details if any."""

    message: str
    paths: tuple[str, ...]
    details: str = ""

    def __str__(self) -> str:
        text = f"{self.message}: {', '.join(sorted(self.paths))}"
        return f"{text}\n{self.details}" if self.details else text


class Refused(ValueError):
    """A Knative Service the admission webhook would refuse; the message is the one kubectl would print."""

    def __init__(self, source: str, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        lines = "\n".join(str(error) for error in sorted(self.errors, key=str))
        super().__init__(f'{source}: admission webhook "{WEBHOOK}" denied the request: validation failed: {lines}')


def admit(path: Path, document: Mapping[str, Any]) -> None:
    """Returns when Knative's webhook would accept this Service; raises Refused, in its words, when not."""
    errors = check(document)
    if errors:
        name = document.get("metadata", {}).get("name", "?")
        raise Refused(f"{path} (Service {name})", errors)


def check(document: Mapping[str, Any]) -> list[FieldError]:
    """The webhook's errors for one Knative Service (serving.knative.dev/v1), [] if it would admit it."""
    template = document.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations") or {}
    spec = template.get("spec", {})
    errors = list(_annotations(annotations, "spec.template.metadata.annotations"))
    errors += _revision_spec(spec, "spec.template.spec")
    return errors


# --- autoscaling annotations -----------------------------------------------------------------------


def _annotation(annotations: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """(key as written, value) of an autoscaling annotation, under its current or older spelling."""
    for spelling in ANNOTATION_KEYS[name]:
        key = ANNOTATION_PREFIX + spelling
        if key in annotations:
            return key, str(annotations[key])
    return None


def _annotations(annotations: Mapping[str, str], at: str) -> Iterator[FieldError]:
    def field(key: str) -> str:
        return f"{at}.{key}"

    autoscaler_class = _annotation(annotations, "class")
    class_value = autoscaler_class[1] if autoscaler_class else KPA
    if autoscaler_class and class_value.endswith("autoscaling.knative.dev") and class_value not in (KPA, HPA):
        yield _invalid(class_value, field(autoscaler_class[0]))

    low, high = 0, 0
    bounds: dict[str, str] = {}
    for name in ("min-scale", "max-scale"):
        found = _annotation(annotations, name)
        if found is None:
            continue
        key, value = found
        number = _int32(value)
        if number is None:
            if re.fullmatch(r"[-+]?\d+", value.strip()):
                yield _out_of_bounds(value, 0, INT32_MAX, field(key))
            else:
                yield _invalid(value, field(key))
            continue
        if number < 0:
            yield _out_of_bounds(value, 0, INT32_MAX, field(key))
            continue
        bounds[name] = key
        if name == "min-scale":
            low = number
        else:
            high = number
    if high != 0 and high < low:
        yield FieldError(
            f"max-scale={high} is less than min-scale={low}",
            (field(bounds["max-scale"]), field(bounds["min-scale"])),
        )

    found = _annotation(annotations, "initial-scale")
    if found is not None:
        key, value = found
        number = _int32(value)
        if number is None:
            yield _invalid(value, field(key))
        elif number < 0:
            yield _invalid(value, field(f"{key} must be greater than 0"))
        elif number == 0 and not ALLOW_ZERO_INITIAL_SCALE:
            yield _invalid(value, field(f"{key}=0 not allowed by cluster"))

    yield from _float_in(annotations, "panic-window-percentage", *PANIC_WINDOW_PERCENTAGE, field)
    yield from _float_in(annotations, "panic-threshold-percentage", *PANIC_THRESHOLD_PERCENTAGE, field)
    found = _annotation(annotations, "target")
    if found is not None:
        key, value = found
        target = _float(value)
        if target is None:
            yield _invalid(value, field(key))
        elif target < TARGET_MIN:
            yield FieldError(f"target {value} should be at least {TARGET_MIN:g}", (field(key),))
    yield from _float_in(annotations, "target-utilization-percentage", 1.0, 100.0, field)

    found = _annotation(annotations, "window")
    if found is not None:
        key, value = found
        seconds = go_duration(value)
        if seconds is None:
            yield _invalid(value, field(key))
        elif not WINDOW_MIN_SECONDS <= seconds <= WINDOW_MAX_SECONDS:
            yield _out_of_bounds(value, _go_format(WINDOW_MIN_SECONDS), _go_format(WINDOW_MAX_SECONDS), field(key))
        elif seconds != math.floor(seconds):
            yield FieldError("must be specified with at most second precision", (field(key),))
    for name, whole_seconds in (("scale-down-delay", True), ("scale-to-zero-pod-retention-period", False)):
        found = _annotation(annotations, name)
        if found is None:
            continue
        key, value = found
        seconds = go_duration(value)
        if seconds is None:
            yield _invalid(value, field(key))
        elif not 0 <= seconds <= WINDOW_MAX_SECONDS:
            yield _out_of_bounds(value, _go_format(0), _go_format(WINDOW_MAX_SECONDS), field(key))
        elif whole_seconds and seconds != round(seconds):
            yield FieldError("must be specified with at most second precision", (field(key),))

    found = _annotation(annotations, "metric")
    if found is not None:
        key, metric = found
        if (class_value == KPA and metric not in ("concurrency", "rps")) or (class_value == HPA and not metric):
            yield _invalid(metric, field(key))


def _float_in(
    annotations: Mapping[str, str], name: str, lowest: float, highest: float, field: Callable[[str], str]
) -> Iterator[FieldError]:
    found = _annotation(annotations, name)
    if found is None:
        return
    key, value = found
    number = _float(value)
    if number is None:
        yield _invalid(value, field(key))
    elif not lowest <= number <= highest:
        yield _out_of_bounds(value, f"{lowest:g}", f"{highest:g}", field(key))


# --- the revision spec ----------------------------------------------------------------------------


def _revision_spec(spec: Mapping[str, Any], at: str) -> list[FieldError]:
    errors: list[FieldError] = []
    timeout = spec.get("timeoutSeconds")
    if isinstance(timeout, int) and timeout != 0 and not 0 <= timeout <= MAX_REVISION_TIMEOUT_SECONDS:
        errors.append(_out_of_bounds(timeout, 0, MAX_REVISION_TIMEOUT_SECONDS, f"{at}.timeoutSeconds"))
    concurrency = spec.get("containerConcurrency")
    if isinstance(concurrency, int) and not 0 <= concurrency <= CONTAINER_CONCURRENCY_MAX:
        errors.append(_out_of_bounds(concurrency, 0, CONTAINER_CONCURRENCY_MAX, f"{at}.containerConcurrency"))
    containers = spec.get("containers") or []
    mounted = {m.get("name") for c in containers for m in c.get("volumeMounts") or []}
    volumes: dict[str, Mapping[str, Any]] = {}
    for index, volume in enumerate(spec.get("volumes") or []):
        errors += _volume(volume, f"{at}.volumes[{index}]", mounted)
        volumes[volume.get("name", "")] = volume
    for index, box in enumerate(containers):
        errors += _container(box, f"{at}.containers[{index}]", volumes)
    return errors


def _volume(volume: Mapping[str, Any], at: str, mounted: set[Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    name = volume.get("name", "")
    if name not in mounted:
        errors.append(FieldError(f'volume with name "{name}" not mounted', (f"{at}.name",)))
    sources = [key for key in volume if key != "name"]
    if "persistentVolumeClaim" in sources:
        claim = volume["persistentVolumeClaim"].get("claimName", "")
        message = f"Persistent volume claim support is disabled, but found persistent volume claim {claim}"
        errors.append(FieldError(message, (f"{at}.persistentVolumeClaim",)))
    disallowed = sorted(key for key in sources if key not in VOLUME_SOURCES and key != "persistentVolumeClaim")
    if disallowed:
        errors.append(FieldError("must not set the field(s)", tuple(f"{at}.{key}" for key in disallowed)))
    specified = [key for key in sources if key in VOLUME_SOURCES]
    if not specified and "persistentVolumeClaim" not in sources:
        errors.append(FieldError("expected exactly one, got neither", tuple(f"{at}.{key}" for key in VOLUME_SOURCES)))
    elif len(specified) > 1:
        errors.append(FieldError("expected exactly one, got both", tuple(f"{at}.{key}" for key in specified)))
    medium = (volume.get("emptyDir") or {}).get("medium", "")
    if medium not in ("", "Memory"):
        errors.append(_invalid(medium, f"{at}.emptyDir.medium"))
    return errors


def _container(box: Mapping[str, Any], at: str, volumes: Mapping[str, Mapping[str, Any]]) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, variable in enumerate(box.get("env") or []):
        if variable.get("name") in RESERVED_ENV:
            errors.append(
                FieldError(f'"{variable["name"]}" is a reserved environment variable', (f"{at}.env[{index}].name",))
            )
    seen_paths: set[str] = set()
    for index, mount in enumerate(box.get("volumeMounts") or []):
        where = f"{at}.volumeMounts[{index}]"
        volume = volumes.get(mount.get("name", ""))
        if volume is None:
            errors.append(FieldError("volumeMount has no matching volume", (f"{where}.name",)))
        mount_path = str(mount.get("mountPath", ""))
        clean = _clean_path(mount_path)
        if not mount_path:
            errors.append(FieldError("missing field(s)", (f"{where}.mountPath",)))
        elif clean in RESERVED_MOUNT_PATHS:
            errors.append(FieldError(f'mountPath "{clean}" is a reserved path', (f"{where}.mountPath",)))
        elif not mount_path.startswith("/"):
            errors.append(_invalid(mount_path, f"{where}.mountPath"))
        elif clean in seen_paths:
            errors.append(_invalid(f'"{mount_path}" must be unique', f"{where}.mountPath"))
        seen_paths.add(clean)
        writable_kind = volume is not None and ("emptyDir" in volume or "persistentVolumeClaim" in volume)
        if volume is not None and not writable_kind and not mount.get("readOnly"):
            errors.append(FieldError("volume mount should be readOnly for this type of volume", (f"{where}.readOnly",)))
    ports = box.get("ports") or []
    port_name = (ports[0].get("name") if ports else None) or "http"
    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = box.get(probe_name)
        if probe is not None:
            errors += _probe(probe, f"{at}.{probe_name}", port_name, readiness=probe_name == "readinessProbe")
    return errors


def _probe(probe: Mapping[str, Any], at: str, port_name: str, *, readiness: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    disallowed = sorted(key for key in probe if key not in PROBE_FIELDS and key not in PROBE_HANDLERS)
    if disallowed:
        errors.append(FieldError("must not set the field(s)", tuple(f"{at}.{key}" for key in disallowed)))
    handlers = [key for key in PROBE_HANDLERS if key in probe]
    for handler in handlers:
        action = probe[handler] or {}
        extra = sorted(key for key in action if key not in HANDLER_FIELDS[handler])
        if extra:
            errors.append(FieldError("must not set the field(s)", tuple(f"{at}.{handler}.{key}" for key in extra)))
        port = action.get("port")
        if handler in ("httpGet", "tcpSocket") and isinstance(port, str) and port != port_name:
            errors.append(_invalid(port, f"{at}.{handler}.port", "Probe port must match container port"))
    if not handlers:
        errors.append(FieldError("expected exactly one, got neither", tuple(f"{at}.{key}" for key in PROBE_HANDLERS)))
    elif len(handlers) > 1:
        shown = ["gRPC" if key == "grpc" else key for key in handlers]
        errors.append(FieldError("expected exactly one, got both", tuple(f"{at}.{key}" for key in shown)))
    if readiness:
        errors += _readiness_bounds(probe, at)
    return errors


def _readiness_bounds(probe: Mapping[str, Any], at: str) -> list[FieldError]:
    """The readiness probe's numbers, after Knative's defaulting (successThreshold 1; with a period,
    Kubernetes' failureThreshold 3 and timeoutSeconds 1)."""
    period = probe.get("periodSeconds", 0)
    success = probe.get("successThreshold") or 1
    failure = probe.get("failureThreshold", 0 if period == 0 else 3)
    timeout = probe.get("timeoutSeconds", 0 if period == 0 else 1)
    errors: list[FieldError] = []
    if period < 0:
        errors.append(_out_of_bounds(period, 0, INT32_MAX, f"{at}.periodSeconds"))
    if probe.get("initialDelaySeconds", 0) < 0:
        errors.append(_out_of_bounds(probe["initialDelaySeconds"], 0, INT32_MAX, f"{at}.initialDelaySeconds"))
    if success < 1:
        errors.append(_out_of_bounds(success, 1, INT32_MAX, f"{at}.successThreshold"))
    if period == 0:
        for name, value in (("failureThreshold", failure), ("timeoutSeconds", timeout)):
            if value != 0:
                errors.append(FieldError(f"{name} is disallowed when periodSeconds is zero", (f"{at}.{name}",)))
    else:
        if timeout < 1:
            errors.append(_out_of_bounds(timeout, 1, INT32_MAX, f"{at}.timeoutSeconds"))
        if failure < 1:
            errors.append(_out_of_bounds(failure, 1, INT32_MAX, f"{at}.failureThreshold"))
    return errors


# --- values as Go reads them ------------------------------------------------------------------------


def go_duration(text: str) -> float | None:
    """Seconds of a Go duration string ("60s", "1m30s", "1.5h", "0"), or None if Go would refuse it."""
    text = text.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _GO_DURATION.match(text):
        return None
    seconds = sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_TERM.findall(text))
    return -seconds if text.startswith("-") else seconds


def _go_format(seconds: float) -> str:
    """A whole number of seconds as Go prints a time.Duration: 0s, 6s, 1m30s, 1h0m0s."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _int32(text: str) -> int | None:
    if not re.fullmatch(r"[-+]?\d+", text.strip()):
        return None
    number = int(text)
    return number if -(2**31) <= number <= INT32_MAX else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _clean_path(path: str) -> str:
    """path.Clean of Go, for absolute paths: no '.', '..' or doubled slashes."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts) if path.startswith("/") else "/".join(parts) or "."


def _invalid(value: object, path: str, details: str = "") -> FieldError:
    return FieldError(f"invalid value: {value}", (path,), details)


def _out_of_bounds(value: object, lowest: object, highest: object, path: str) -> FieldError:
    return FieldError(f"expected {lowest} <= {value} <= {highest}", (path,))
