"""`tasklab config validate --file F`: every problem of a configuration file, one line each.

A role that reads a bad file stops at start-up with the first problem it meets (one line, exit
2). That is right for a process, and slow for a person: fix, redeploy, read the next one. This
check reads the file the way the roles do (on top of `base.toml`, `${VAR:-default}` substituted)
and lists *every* problem at once, before anything is deployed: an unknown key (with the key it
probably meant), a value of the wrong type, a duration or an address that does not parse, a
timer that contradicts another, and the rules a production profile must keep (auth required,
credentials never in a file, no loopback address for a backing service).

It is deterministic: a `${VAR:-default}` is checked with its default, whatever the caller's
environment holds, and a `${VAR}` without a default is a value the deployment supplies at run
time, reported as such and not checked. The same file gives the same answer on a laptop and in CI.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from common.config.durations import DurationError, parse_duration
from common.config.settings import (
    _VAR,
    ApiConfig,
    Settings,
    _deep_merge,
    weak_secret_reason,
)


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def line(self, path: Path | str) -> str:
        return f"{path}: {self.key}: {self.message}"


@dataclass(frozen=True)
class Report:
    problems: list[Problem]
    # Variables a `${VAR}` without a default reads: supplied by the deployment at run time.
    runtime_vars: list[str]
    keys: int


# The credentials: from the environment only (base.toml says so), never a file in a repository.
CREDENTIAL_KEYS = ("api_keys", "jwt_secret")
CREDENTIAL_VARS = ("API_KEYS", "JWT_SECRET", "TASKLAB_API_KEYS", "TASKLAB_JWT_SECRET")

# host:port addresses a process serves on.
SERVE_ADDRESSES = ("rpc_address", "api_address", "metrics_address")
DURATION_KEYS = (
    "task_retention",
    "retention_sweep_interval",
    "archive_claim_idle",
    "archive_forget_after",
)
# The backing services: a production process in a container or a pod has none on its loopback.
SERVICE_KEYS = ("redis_url", "zk_hosts", "kafka_bootstrap")
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[?::1\]?)$", re.IGNORECASE)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


def is_production(env_name: str) -> bool:
    return env_name in ("production", "prod")


def validate_file(path: Path, env_name: str | None = None, base: Path | None = None) -> Report:
    """Check `path` as the profile `env_name` (default: the file's stem) layered on `base`
    (default: the base.toml next to it, if `path` is not itself a base file)."""
    env_name = env_name or path.stem
    problems: list[Problem] = []
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return Report([Problem("(file)", f"cannot read it ({exc.strerror or exc})")], [], 0)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return Report([Problem("(syntax)", f"not valid TOML: {exc}")], [], 0)

    runtime_vars: list[str] = []
    runtime_keys: list[str] = []
    layer = _with_defaults(raw, "", problems, runtime_vars, runtime_keys)
    if base is None and path.name != "base.toml" and (path.parent / "base.toml").exists():
        base = path.parent / "base.toml"
    merged: dict[str, Any] = {}
    if base is not None and base.resolve() != path.resolve():
        try:
            base_raw = tomllib.loads(base.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(Problem("(base)", f"{base} cannot be read as TOML ({exc})"))
        else:
            merged = _with_defaults(base_raw, "", [], [], [])
    _deep_merge(merged, layer)
    # A value the deployment supplies is not base.toml's either: nothing to check it against.
    for key in runtime_keys:
        *parents, leaf = key.split(".")
        table = merged
        for parent in parents:
            table = table.get(parent) if isinstance(table, dict) else None
        if isinstance(table, dict):
            table.pop(leaf, None)

    own = set(_flatten(raw))
    problems += _unknown_keys(raw, Settings, "")
    problems += _wrong_toml_types(raw, Settings, "")
    problems += _credentials(raw)
    problems += _addresses(merged)
    problems += _model_errors(merged)
    problems += _contradictions(merged)
    if is_production(env_name):
        problems += [
            p if p.key in own else Problem(p.key, f"{p.message} (the base.toml value: set it here)")
            for p in _production_rules(merged)
        ]
    # One line per problem: a key the model refused and a rule refused is said once.
    seen: set[tuple[str, str]] = set()
    unique = []
    for problem in problems:
        if (problem.key, problem.message) not in seen:
            seen.add((problem.key, problem.message))
            unique.append(problem)
    return Report(unique, sorted(set(runtime_vars)), len(own))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _with_defaults(
    data: Any, key: str, problems: list[Problem], runtime_vars: list[str], runtime_keys: list[str]
) -> Any:
    """`data` with every `${VAR:-default}` replaced by its default; a key whose value needs a
    `${VAR}` without one is left out (the deployment supplies it; nothing to check here)."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            name = f"{key}.{k}" if key else k
            value = _with_defaults(v, name, problems, runtime_vars, runtime_keys)
            if value is _RUNTIME:
                runtime_keys.append(name)
            else:
                out[k] = value
        return out
    if isinstance(data, list):
        items = [_with_defaults(v, key, problems, runtime_vars, runtime_keys) for v in data]
        return _RUNTIME if _RUNTIME in items else items
    if not isinstance(data, str):
        return data
    missing = False
    for match in _VAR.finditer(data):
        var, default = match.group(1), match.group(2)
        if var in CREDENTIAL_VARS:
            problems.append(
                Problem(
                    key,
                    f"reads ${{{var}}} in a file: a credential comes from the environment "
                    "only, so no file can carry a default for it",
                )
            )
        if default is None:
            runtime_vars.append(var)
            missing = True
    if missing:
        return _RUNTIME
    return _VAR.sub(lambda m: m.group(2), data)


_RUNTIME = object()


def _model_for(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unknown_keys(data: dict[str, Any], model: type[BaseModel], prefix: str) -> list[Problem]:
    problems = []
    known = _field_names(model)
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            problems.append(Problem(name, f"unknown key{hint}"))
            continue
        sub = _model_for(model, key)
        if sub is not None:
            if isinstance(value, dict):
                problems += _unknown_keys(value, sub, name + ".")
            else:
                problems.append(Problem(name, f"must be a table ([{name}]), got {_kind(value)}"))
    return problems


def _field_names(model: type[BaseModel]) -> list[str]:
    names = list(model.model_fields)
    if model is Settings:
        names.remove("env")  # TASKLAB_ENV chooses the file: a file cannot choose itself
    return names


def _wrong_toml_types(data: dict[str, Any], model: type[BaseModel], prefix: str) -> list[Problem]:
    """A TOML value whose own type cannot be the field's: `true` for a number, `5` for a
    string. Strings are left to the model (a `${VAR:-5}` is a string that may be a number),
    which also reads a number from a string the way an environment variable is read."""
    problems = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None or isinstance(value, str):
            continue
        sub = _model_for(model, key)
        if sub is not None:
            if isinstance(value, dict):
                problems += _wrong_toml_types(value, sub, f"{prefix}{key}.")
            continue
        expected = _scalar_types(field.annotation)
        if expected and not isinstance(value, expected):
            names = " or ".join(sorted({_type_name(t) for t in expected}))
            problems.append(Problem(f"{prefix}{key}", f"must be {names}, got {_kind(value)}"))
        elif isinstance(value, bool) and bool not in expected and expected:
            problems.append(Problem(f"{prefix}{key}", f"must be a number, got {_kind(value)}"))
    return problems


def _scalar_types(annotation: Any) -> tuple[type, ...]:
    """The TOML value types a field accepts, or () when any may do (let the model decide)."""
    origin = get_origin(annotation)
    if annotation is bool:
        return (bool,)
    if annotation is int:
        return (int,)
    if annotation is float:
        return (int, float)
    if annotation is str:
        return (str,)
    if origin is list or annotation is list:
        return (list,)
    if origin is dict:
        return (dict,)
    args = get_args(annotation)
    if args and origin is not None and str(origin).endswith("Literal"):
        return tuple({type(a) for a in args})
    if args:  # a union (bool | "auto"), an Annotated: the union of what its members accept
        merged: tuple[type, ...] = ()
        for arg in args:
            if arg is type(None):
                continue
            member = _scalar_types(arg)
            if not member:
                return ()
            merged += member
        return tuple(dict.fromkeys(merged))
    return ()


def _type_name(t: type) -> str:
    return {
        bool: "true or false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"


def _credentials(raw: dict[str, Any]) -> list[Problem]:
    problems = []
    for key in CREDENTIAL_KEYS:
        if key in raw:
            detail = ""
            if key == "jwt_secret" and isinstance(raw[key], str) and "${" not in raw[key]:
                reason = weak_secret_reason(raw[key])
                detail = f" (and this one {reason})" if reason else ""
            env = "API_KEYS" if key == "api_keys" else "JWT_SECRET"
            problems.append(
                Problem(
                    key,
                    f"a credential in a file: set {env} (or TASKLAB_{env}) in the environment, "
                    f"from a secret store, instead{detail}",
                )
            )
    return problems


def _address_problem(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return f"{value!r} is not HOST:PORT"
    if not _HOST.match(host):
        return f"{value!r}: {host!r} is not a host name or an IP address"
    if not 0 <= int(port) <= 65535:
        return f"{value!r}: port {port} is not in 0-65535"
    return None


def _addresses(merged: dict[str, Any]) -> list[Problem]:
    problems = []
    for key in SERVE_ADDRESSES:
        value = merged.get(key)
        if not isinstance(value, str) or (key == "metrics_address" and value == ""):
            continue
        reason = _address_problem(value)
        if reason:
            problems.append(Problem(key, reason))
    for key in ("zk_hosts", "kafka_bootstrap"):
        value = merged.get(key)
        if not isinstance(value, str):
            continue
        hosts = value.split("/", 1)[0] if key == "zk_hosts" else value
        for part in hosts.split(","):
            reason = _address_problem(part.strip())
            if reason:
                problems.append(Problem(key, f"{reason} (a comma-separated HOST:PORT list)"))
    url = merged.get("redis_url")
    if isinstance(url, str):
        if not re.match(r"^(redis|rediss|unix)://", url):
            problems.append(
                Problem("redis_url", f"{url!r} is not a redis://, rediss:// or unix:// URL")
            )
        elif not url.startswith("unix://"):
            netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
            if netloc and ":" in netloc:
                reason = _address_problem(netloc)
                if reason:
                    problems.append(Problem("redis_url", reason))
    for key in DURATION_KEYS:
        value = merged.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                if parse_duration(value) <= 0:
                    problems.append(Problem(key, f"{value!r} must be longer than 0"))
            except DurationError as exc:
                problems.append(Problem(key, str(exc)))
    return problems


# Problems the address and duration checks above already say better than pydantic's pattern
# and parse errors.
_SAID_BETTER = {*SERVE_ADDRESSES, *DURATION_KEYS}


def _model_errors(merged: dict[str, Any]) -> list[Problem]:
    data = {k: v for k, v in merged.items() if k not in CREDENTIAL_KEYS}
    unknown = [k for k in data if k not in Settings.model_fields or k == "env"]
    for key in unknown:
        data.pop(key)
    api = data.get("api")
    if isinstance(api, dict):
        data["api"] = _known_only(api, ApiConfig)
    elif "api" in data:
        data.pop("api")
    try:
        # model_validate, not Settings(): the model's own rules, without reading the
        # environment or the config directory (this is about the file, not this machine).
        Settings.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if key in _SAID_BETTER or e["type"] == "extra_forbidden":
                continue
            problems.append(Problem(key, _say(e)))
        return problems
    return []


def _known_only(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key not in model.model_fields:
            continue
        sub = _model_for(model, key)
        if sub is not None:
            if isinstance(value, dict):
                out[key] = _known_only(value, sub)
            continue
        out[key] = value
    return out


def _say(error: dict[str, Any]) -> str:
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and not isinstance(value, dict):
        return f"{message} (got {value!r})"
    return message


def _number(merged: dict[str, Any], key: str) -> float | None:
    value = merged.get(key)
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _contradictions(merged: dict[str, Any]) -> list[Problem]:
    """Timers that are each valid and wrong together."""
    defaults = Settings.model_fields
    problems = []

    def value(key: str) -> float | None:
        own = _number(merged, key)
        return own if own is not None else defaults[key].default

    interval = value("heartbeat_interval")
    for key in ("heartbeat_ttl", "manager_heartbeat_timeout"):
        limit = value(key)
        if interval is not None and limit is not None and limit <= interval:
            problems.append(
                Problem(
                    key,
                    f"{limit:g}s is not longer than heartbeat_interval ({interval:g}s): every "
                    "agent would be presumed dead between two of its heartbeats",
                )
            )
    base, cap = value("retry_backoff_base"), value("retry_backoff_max")
    if base is not None and cap is not None and cap < base:
        problems.append(
            Problem(
                "retry_backoff_max",
                f"{cap:g}s is shorter than retry_backoff_base ({base:g}s): the cap would "
                "shorten even the first retry's wait",
            )
        )
    return problems


def _production_rules(merged: dict[str, Any]) -> list[Problem]:
    problems = []
    auth = (merged.get("api") or {}).get("auth") or {}
    enabled = auth.get("enabled", "auto")
    if enabled is not True and str(enabled).strip().lower() not in ("true", "1", "yes", "on"):
        problems.append(
            Problem(
                "api.auth.enabled",
                f"is {enabled!r}; production requires true, so that the front doors refuse to "
                "start without credentials instead of letting every caller in as Admin",
            )
        )
    for key in SERVICE_KEYS:
        value = merged.get(key)
        if not isinstance(value, str):
            continue
        hosts = _hosts(key, value)
        local = [h for h in hosts if _LOOPBACK.match(h)]
        if local:
            problems.append(
                Problem(
                    key,
                    f"points at {local[0]}: a production process in a container or a pod has "
                    "no service on its own loopback; name the managed service",
                )
            )
    fmt = merged.get("log_format", "auto")
    if fmt == "text":
        problems.append(
            Problem(
                "log_format",
                "is 'text'; production logs are collected by machines: json (or auto, which is "
                "json when the output is not a terminal)",
            )
        )
    origins = ((merged.get("api") or {}).get("security") or {}).get("cors_origins") or []
    if isinstance(origins, list) and "*" in origins:
        problems.append(
            Problem(
                "api.security.cors_origins",
                "contains '*': in production name the console's origins; any web page could "
                "otherwise call the API from a signed-in browser",
            )
        )
    return problems


def _hosts(key: str, value: str) -> list[str]:
    if key == "redis_url":
        if value.startswith("unix://"):
            return []
        netloc = value.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        return [netloc.rsplit(":", 1)[0].strip("[]") if ":" in netloc else netloc]
    hosts = value.split("/", 1)[0] if key == "zk_hosts" else value
    return [part.strip().rsplit(":", 1)[0].strip("[]") for part in hosts.split(",") if part]
