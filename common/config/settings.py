"""Settings, layered: defaults < config/base.toml < config/<env>.toml < TASKLAB_* env vars.

String values in the TOML files may say `${VAR}` or `${VAR:-default}`; they are substituted
from the environment when the file is read, so one file serves a laptop and a container.

Pattern: Singleton, taught as a cached factory (introduced in stage 1). `get_settings()` is
wrapped in `functools.lru_cache`: the first call builds the object, later calls return the same
one. A module-level function is the Pythonic singleton: no metaclass, no `__new__` tricks, and
tests can still build an independent `Settings` (or call `get_settings.cache_clear()`), which a
singleton class would make awkward.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from common.config.durations import parse_duration
from common.domain.composite import MAX_CHILD_INPUT_BYTES
from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    ESCAPED_PAYLOAD_FACTOR,
    MESSAGE_ENVELOPE_BYTES,
    max_message_bytes,
)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """Invalid configuration. Its message is one line, fit for a terminal."""


def substitute(value: str, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"config refers to ${{{name}}}, which is not set and has no default")

    return _VAR.sub(repl, value)


def _substitute_tree(data: Any) -> Any:
    if isinstance(data, str):
        return substitute(data)
    if isinstance(data, dict):
        return {k: _substitute_tree(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute_tree(v) for v in data]
    return data


def config_dir() -> Path:
    explicit = os.environ.get("TASKLAB_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    for candidate in (Path.cwd() / "config", Path(__file__).resolve().parents[2] / "config"):
        if (candidate / "base.toml").exists():
            return candidate
    return Path.cwd() / "config"


def read_toml_layers(env_name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    directory = config_dir()
    for name in ("base", env_name):
        path = directory / f"{name}.toml"
        if not path.exists():
            if name != "base" and env_name != "local":
                raise ConfigError(f"no config file for environment {env_name!r}: {path}")
            continue
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        _deep_merge(merged, _substitute_tree(data))
    return merged


def _deep_merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    # A table ([api.auth]) in config/production.toml overrides only the keys it names: the
    # rest of base.toml's table stays.
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


class _TomlLayers(PydanticBaseSettingsSource):
    def get_field_value(self, field, field_name):  # pragma: no cover - unused by pydantic here
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_toml_layers(os.environ.get("TASKLAB_ENV", "local"))


# The names configuration may pick a placement strategy by. The strategies live in
# common/scheduling/strategies.py, above configuration in the layering (scheduling imports
# coordination, which imports config): reading the names from that registry would make config
# import scheduling, a cycle. tests/unit/test_placement_names.py checks the two lists agree.
PLACEMENT_STRATEGIES: tuple[str, ...] = ("least-load", "round-robin", "random")


# The roles an API key or a token may grant. common.security.Role is the model the API and the
# providers check; it sits above configuration in the layering, so the names are repeated here
# for validation, and tests/unit/test_security_config.py checks the two agree.
ROLE_NAMES: tuple[str, ...] = ("TaskRead", "TaskWrite", "Admin")

# RFC 7518 section 3.2: an HS256 key MUST be at least as long as the hash output (256 bits).
MIN_JWT_SECRET_BYTES = 32

# A secret copied from an example, a tutorial or a compose file is known to everyone who read
# it: a token signed with it proves nothing. Compared after lower-casing and dropping every
# character that is not a letter or a digit, so "Change-Me!" is caught as "changeme".
_PLACEHOLDER_SECRET_WORDS = (
    "changeme",
    "changeit",
    "replaceme",
    "placeholder",
    "yoursecret",
    "mysecret",
    "supersecret",
    "secretkey",
    "jwtsecret",
    "donotuse",
    "notasecret",
    "example",
    "default",
    "insecure",
    "password",
)


def weak_secret_reason(secret: str) -> str | None:
    """Why `secret` must not sign tokens, or None if it may."""
    if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
        return (
            f"is {len(secret.encode())} bytes; HS256 needs at least {MIN_JWT_SECRET_BYTES} "
            f"(RFC 7518 3.2), e.g. `openssl rand -hex 32`"
        )
    folded = re.sub(r"[^a-z0-9]", "", secret.lower())
    for word in _PLACEHOLDER_SECRET_WORDS:
        if word in folded:
            return f"looks like a placeholder (it contains {word!r}); generate a random one"
    if len(set(folded)) < 8:
        return "repeats too few characters to be random; generate a random one"
    return None


def parse_api_keys(raw: object) -> dict[str, tuple[str, ...]]:
    """API_KEYS as JSON text ({"KEY": ["Admin"]}) or a mapping, checked; never echoes a key.

    Error messages name the key by its position only: the key is the secret, and the message
    goes to a terminal and to logs.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"API_KEYS is not valid JSON ({exc.msg} at line {exc.lineno} column "
                f'{exc.colno}); expected an object like {{"KEY": ["Admin"]}}'
            ) from None
    if not isinstance(raw, dict):
        raise ValueError(
            f"API_KEYS must be a JSON object of key -> list of roles, got {type(raw).__name__}"
        )
    keys: dict[str, tuple[str, ...]] = {}
    for n, (key, roles) in enumerate(raw.items(), start=1):
        where = f"API_KEYS entry {n}"
        # Printable ASCII without spaces: the key travels in an HTTP header and in gRPC
        # metadata, which carry nothing else intact.
        if not isinstance(key, str) or not re.fullmatch(r"[!-~]+", key):
            raise ValueError(f"{where}: a key must be printable ASCII without spaces")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not roles:
            raise ValueError(f'{where}: roles must be a non-empty list, e.g. ["TaskRead"]')
        for role in roles:
            if role not in ROLE_NAMES:
                raise ValueError(
                    f"{where}: unknown role {str(role)[:40]!r}; roles are {', '.join(ROLE_NAMES)}"
                )
        keys[key] = tuple(dict.fromkeys(roles))
    return keys


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Section):
    """[api.auth]: who may call the REST API and the gRPC providers."""

    # "auto": on as soon as API_KEYS or JWT_SECRET is set, off otherwise (the local profile).
    # true: required; a role that checks credentials refuses to start without any to check.
    enabled: bool | Literal["auto"] = "auto"
    # Clock skew tolerated when checking a token's exp/nbf/iat, in seconds.
    jwt_leeway: float = Field(default=0.0, ge=0, le=300)
    # When set, a token must carry this `aud` / `iss` (checked by pyjwt).
    jwt_audience: str = ""
    jwt_issuer: str = ""

    @field_validator("enabled", mode="before")
    @classmethod
    def _tri_state(cls, v: object) -> object:
        # One clear message for a bad value, rather than one per member of the union.
        if isinstance(v, str):
            folded = v.strip().lower()
            if folded in ("true", "1", "yes", "on"):
                return True
            if folded in ("false", "0", "no", "off"):
                return False
            if folded == "auto":
                return "auto"
            raise ValueError(f"must be auto, true or false, got {v[:40]!r}")
        return v


class RateLimitConfig(_Section):
    """[api.rate_limiting]: a token bucket per caller, shared by every API replica in Redis."""

    enabled: bool = True
    requests_per_second: float = Field(default=50.0, gt=0, le=1_000_000)
    burst: int = Field(default=100, ge=1, le=10_000_000)
    # A check Redis has not answered within this many seconds lets the call through (fail
    # open, see common/security/ratelimit.py), so a hung Redis does not hold every request.
    redis_timeout: float = Field(default=0.5, gt=0, le=30)
    # The console's login (common/api/console/login_limit.py): this many failed logins per
    # client address, one more each login_window / login_failures seconds; a good key spends
    # nothing. With `enabled` off there is no limit on logins either.
    login_failures: int = Field(default=5, ge=1, le=10_000)
    login_window: float = Field(default=60.0, gt=0, le=86_400)


class SecurityConfig(_Section):
    """[api.security]: CORS and the sizes a request may have."""

    # From the environment as JSON (["https://a", "https://b"]) or comma-separated.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # 0 = just enough for the largest legal task: a payload at max_payload_bytes with every
    # character sent as a six-byte \\u escape, plus the rest of the body.
    max_body_bytes: int = Field(default=0, ge=0)
    max_url_bytes: int = Field(default=8192, ge=256)
    max_header_bytes: int = Field(default=16384, ge=1024)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list ({exc.msg})") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return v


class ApiConfig(_Section):
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limiting: RateLimitConfig = Field(default_factory=RateLimitConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)


def _default_agent_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    # A nested value is overridden as TASKLAB_API__RATE_LIMITING__BURST=20 (two underscores
    # between levels, so the single underscores inside names stay unambiguous).
    model_config = SettingsConfigDict(
        env_prefix="TASKLAB_", extra="forbid", env_nested_delimiter="__"
    )

    env: str = "local"
    stage: int = Field(default=1, ge=1, le=5)

    redis_url: str = "redis://127.0.0.1:6379/0"
    zk_hosts: str = "127.0.0.1:2181"
    zk_chroot: str = ""
    zk_session_timeout: float = Field(default=10.0, gt=0)
    kafka_bootstrap: str = "127.0.0.1:9092"

    agent_id: str = Field(default_factory=_default_agent_id)
    agent_capacity: int = Field(default=2, ge=1, le=256)
    agent_claim: Literal["reliable", "naive"] = "reliable"
    heartbeat_interval: float = Field(default=1.0, gt=0)
    heartbeat_ttl: float = Field(default=5.0, gt=0)
    reaper_interval: float = Field(default=1.0, gt=0)
    # SIGTERM: running tasks get this long to finish before they are killed and handed back.
    agent_stop_grace: float = Field(default=30.0, ge=0, le=3600)
    retry_backoff_base: float = Field(default=1.0, ge=0)
    retry_backoff_max: float = Field(default=30.0, ge=0)
    # A task whose runs keep dying with their agent (it exhausts memory, kills its parent)
    # ends FAILED after this many such losses instead of taking agent after agent down.
    max_lost_attempts: int = Field(default=3, ge=1, le=100)
    # The functions HANDLER tasks may call, as "module:function"; each must be importable by
    # the agent's Python (its zygotes import them once at start). Checked by `run agent`.
    agent_handlers: list[str] = Field(default_factory=list)
    # Where a HANDLER call runs: "warm" (a pool process that serves call after call, recycled
    # after agent_handler_max_calls calls; 0 = never) or "fork" (a child forked per call).
    agent_handler_mode: Literal["warm", "fork"] = "warm"
    agent_handler_max_calls: int = Field(default=1000, ge=0, le=10_000_000)

    # Stage 2: the leader-elected scheduler.
    scheduler_id: str = Field(default_factory=_default_agent_id)
    scheduler_strategy: str = "least-load"
    scheduler_agent_backlog: int = Field(default=2, ge=1, le=1000)
    scheduler_poll_timeout: float = Field(default=0.5, gt=0)
    scheduler_sweep_interval: float = Field(default=1.0, gt=0)
    # How often the leader's schedule firer looks for schedules due (seconds).
    schedule_interval: float = Field(default=0.5, gt=0, le=60)
    # Tests only: a file holding the Unix time the schedule firer takes as "now" (FileClock),
    # so a test can move a scheduler process's clock to a fire time. Unset: the system clock.
    clock_file: str | None = None

    # Stage 3: the Kafka event bus and the manager.
    # Prefixes every topic and consumer group, as zk_chroot does for ZooKeeper paths, so several
    # installations (or parallel tests) can share one broker. Empty = the brief's topic names.
    kafka_namespace: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100)
    manager_id: str = Field(default_factory=_default_agent_id)
    manager_heartbeat_timeout: float = Field(default=5.0, gt=0)
    manager_log_wait: float = Field(default=3.0, ge=0)
    dispatch_republish_after: float = Field(default=5.0, gt=0)

    # Stage 4: the gRPC TaskService provider. Port 0 = a free port the OS picks; clients find
    # the real one in ZooKeeper (/services/TaskService/{host:port}), so providers on one host
    # never collide. A wildcard host (0.0.0.0) is advertised as rpc_advertise_host, else as
    # this machine's hostname.
    rpc_address: str = Field(default="127.0.0.1:0", pattern=r"^\[?[A-Za-z0-9_.:-]*\]?:\d{1,5}$")
    rpc_advertise_host: str = ""
    rpc_workers: int = Field(default=16, ge=1, le=1024)
    rpc_watch_poll: float = Field(default=0.1, gt=0, le=10)
    rpc_watch_max: float = Field(default=3600.0, gt=0)  # a Watch with no deadline ends then
    rpc_stop_grace: float = Field(default=5.0, ge=0)  # in-flight calls finish within this
    # Stage 4: the REST API (`tasklab run api --stage 4`), a gRPC client of the providers.
    # A fixed port, unlike rpc_address: people and scripts reach the API by this address.
    api_address: str = Field(default="127.0.0.1:8080", pattern=r"^\[?[A-Za-z0-9_.:-]*\]?:\d{1,5}$")

    # Stage 5: every role's operator port, serving /metrics, /health and /ready. Empty = none
    # (the API still serves /metrics on api_address). Port 0 = a free port, logged at start.
    metrics_address: str = Field(default="", pattern=r"^(\[?[A-Za-z0-9_.:-]*\]?:\d{1,5})?$")
    # Stage 5: where each role sends its trace spans (OTLP over gRPC, e.g. a collector or Jaeger
    # at http://127.0.0.1:4317). Empty = tracing off, at no cost (common/observability/tracing.py).
    otlp_endpoint: str = Field(default="", pattern=r"^(https?://[^\s/]+/?)?$")

    # Stage 5: the guarantee checker (`tasklab run checker`). A pass reads one window of
    # tasks:index (checker_window task records), every agent's processing list and the new
    # dead letters; a violation counts once its condition lasted past its grace or deadline.
    checker_id: str = Field(default_factory=_default_agent_id)
    checker_interval: float = Field(default=5.0, gt=0)
    checker_window: int = Field(default=1000, ge=1, le=100_000)
    checker_owner_grace: float = Field(default=30.0, ge=0)
    checker_timeout_grace: float = Field(default=30.0, ge=0)
    # Per-state deadlines (PowerJob's per-phase timeouts); a composite's WAITING child has none.
    checker_pending_deadline: float = Field(default=600.0, gt=0)
    checker_scheduled_deadline: float = Field(default=30.0, gt=0)
    checker_dispatched_deadline: float = Field(default=120.0, gt=0)

    # Stage 5: the PostgreSQL archive (`tasklab run archiver`, common/archive). Empty = none.
    archive_dsn: str = ""
    archive_id: str = Field(default_factory=_default_agent_id)
    archive_batch_max: int = Field(default=500, ge=1, le=100_000)
    archive_retry_max: float = Field(default=30.0, gt=0)
    # How long a killed archiver's partitions of the status topic wait for a live archiver: its
    # consumer's Kafka session (session.timeout.ms), in seconds. Kafka's own default; a broker
    # accepts 6 s to 30 min (group.min/max.session.timeout.ms).
    archive_session_timeout: float = Field(default=45.0, ge=6.0, le=1800.0)
    # The outbox (archive:outbox): an archiver takes over the entries another has held this long
    # without acknowledging them (a killed archiver, or one whose pod and name are gone), and
    # forgets a consumer name with nothing pending that has been silent this long.
    archive_claim_idle: float = Field(default=60.0, gt=0)
    archive_forget_after: float = Field(default=3600.0, gt=0)

    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1)
    output_cap_bytes: int = Field(default=64 * 1024, ge=1)
    max_log_lines: int = Field(default=1000, ge=1)

    # Retention: nothing grows forever. A finished task (hash, history, logs, idempotency key)
    # is deleted by the retention sweep once it has not changed for this long; "7d", "12h",
    # "90m", "3600s" or a number of seconds.
    task_retention: float = Field(default=7 * 86400.0, gt=0)
    retention_sweep_interval: float = Field(default=60.0, gt=0)
    # queue:dead-letter keeps the newest this many entries; stats:dead-letter counts the rest.
    dead_letter_max: int = Field(default=10_000, ge=1)

    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Stage 5: the log store (VictoriaLogs, http://host:port). When set, every role also ships
    # its JSON lines there (common/observability/logshipping.py); stderr stays the log. Not
    # checked here: a role with an unusable one says so and runs on, its lines on stderr only.
    logs_url: str = ""
    # Lines a role keeps while the store is away; past that, new ones are dropped and counted.
    logs_queue_lines: int = Field(default=10_000, ge=1, le=1_000_000)
    # Lines per POST; a batch waiting for the store to come back is held beside the queue, so
    # at most logs_queue_lines + logs_batch_lines lines wait in all.
    logs_batch_lines: int = Field(default=500, ge=1, le=100_000)
    # The `process` on every log line ("agent-2", as the dev stack and compose name them);
    # empty = ROLE-HOSTNAME-PID.
    process_name: str = ""

    # Stage 4: the front doors' security ([api.auth], [api.rate_limiting], [api.security]).
    api: ApiConfig = Field(default_factory=ApiConfig)
    # The credentials come from the environment only (never a file in the repository), under
    # the deployment guide's names or tasklab's prefixed ones; the prefixed one wins. Kept out
    # of the settings' repr, so a logged Settings does not carry them.
    api_keys: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("TASKLAB_API_KEYS", "API_KEYS", "api_keys"),
        repr=False,
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TASKLAB_JWT_SECRET", "JWT_SECRET", "jwt_secret"),
        repr=False,
    )

    @property
    def auth_enabled(self) -> bool:
        enabled = self.api.auth.enabled
        if enabled == "auto":
            return bool(self.api_keys or self.jwt_secret)
        return enabled

    @property
    def max_body_bytes(self) -> int:
        configured = self.api.security.max_body_bytes
        return configured or max_message_bytes(self.max_payload_bytes)

    @property
    def max_document_body_bytes(self) -> int:
        """The body limit of POST /api/v1/composites: a composite document may hold as many
        payloads as DOCUMENT_PAYLOAD_FACTOR, each escaped at worst. A configured
        max_body_bytes holds for every path, this one included."""
        from common.domain.composite import DOCUMENT_PAYLOAD_FACTOR

        configured = self.api.security.max_body_bytes
        return configured or DOCUMENT_PAYLOAD_FACTOR * max_message_bytes(self.max_payload_bytes)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, v: object) -> object:
        return parse_api_keys(v)

    @field_validator("jwt_secret", mode="before")
    @classmethod
    def _jwt_secret(cls, v: object) -> object:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if v is None or (isinstance(v, str) and not v):
            return None
        if isinstance(v, str):
            reason = weak_secret_reason(v)
            if reason:
                raise ValueError(f"JWT_SECRET {reason}")
        return v

    @field_validator("scheduler_strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in PLACEMENT_STRATEGIES:
            raise ValueError(
                f"unknown strategy {v!r}; choose one of {', '.join(sorted(PLACEMENT_STRATEGIES))}"
            )
        return v

    @field_validator(
        "task_retention",
        "retention_sweep_interval",
        "archive_claim_idle",
        "archive_forget_after",
        mode="before",
    )
    @classmethod
    def _duration(cls, v: object) -> object:
        # A string is a duration with a unit; anything else is left to the float check.
        return parse_duration(v) if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # Later entries lose: explicit arguments beat environment variables beat files.
        return (init_settings, env_settings, _TomlLayers(settings_cls))


# Fields read under an alias (the deployment guide's names): how an error names them.
_ALIASED = {
    "tasklab_api_keys": ("api_keys", "TASKLAB_API_KEYS or API_KEYS"),
    "api_keys": ("api_keys", "TASKLAB_API_KEYS or API_KEYS"),
    "tasklab_jwt_secret": ("jwt_secret", "TASKLAB_JWT_SECRET or JWT_SECRET"),
    "jwt_secret": ("jwt_secret", "TASKLAB_JWT_SECRET or JWT_SECRET"),
}


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0].lower() in _ALIASED:
            # Only the field: anything deeper would be a key of API_KEYS, i.e. a secret.
            field, env_name = _ALIASED[loc[0].lower()]
        else:
            field = ".".join(loc)
            env_name = "TASKLAB_" + "__".join(loc).upper()
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{field} ({env_name}): {msg}")
    return "invalid configuration: " + "; ".join(parts)


# What each transport carries at most, as shipped: librdkafka's producer refuses a message over
# its `message.max.bytes` (1000000; the broker's own default, 1048588, is a little larger), and a
# Redis string is at most `proto-max-bulk-len` (512 MiB).
KAFKA_MESSAGE_MAX_BYTES = 1_000_000
REDIS_VALUE_MAX_BYTES = 512 * 1024 * 1024


def check_transport_limits(settings: Settings, stage: int | None = None) -> None:
    """Raise ConfigError (one line) if a task within `max_payload_bytes` cannot travel.

    A task is checked against the limit once, when it enters; after that every transport must
    carry it, or it is accepted and then stranded (DISPATCHED, with a dispatch the producer
    refuses). The largest message a task makes is a composite's child: its payload and its
    TASKLAB_INPUT (a map item or a reduce step's input, MAX_CHILD_INPUT_BYTES at most), each
    escaped for JSON (at most ESCAPED_PAYLOAD_FACTOR times its size, which validation
    enforces), plus its envelope. Stage 3 on, it rides on Kafka too. Checked at start-up, for
    `stage` or `settings.stage`.
    """
    stage = settings.stage if stage is None else stage
    largest = (
        ESCAPED_PAYLOAD_FACTOR * (settings.max_payload_bytes + MAX_CHILD_INPUT_BYTES)
        + MESSAGE_ENVELOPE_BYTES
    )
    carriers = [("a Redis value", REDIS_VALUE_MAX_BYTES)]
    if stage >= 3:
        carriers.append(("a Kafka message (message.max.bytes)", KAFKA_MESSAGE_MAX_BYTES))
    for name, capacity in carriers:
        if largest > capacity:
            fits = largest_payload_carried(capacity)
            raise ConfigError(
                f"invalid configuration: max_payload_bytes (TASKLAB_MAX_PAYLOAD_BYTES) is "
                f"{settings.max_payload_bytes}, but {name} carries at most {capacity} bytes, "
                f"which fits a payload of up to {fits} bytes (beside a composite child's "
                f"input of up to {MAX_CHILD_INPUT_BYTES}) in stage {stage}"
            )


def largest_payload_carried(capacity: int) -> int:
    """The largest max_payload_bytes whose largest message fits `capacity` bytes."""
    return (capacity - MESSAGE_ENVELOPE_BYTES) // ESCAPED_PAYLOAD_FACTOR - MAX_CHILD_INPUT_BYTES


def check_auth(settings: Settings) -> None:
    """Raise ConfigError (one line) if auth is required but there is nothing to check against.

    Called by the roles that check credentials (the REST API and the gRPC providers) when they
    build their Authenticator, not by every role: an agent or a scheduler never sees a caller,
    so a production agent needs neither the keys nor the secret in its environment.
    (A weak JWT_SECRET is refused by every role, when the settings are read.)
    """
    if settings.api.auth.enabled is True and not (settings.api_keys or settings.jwt_secret):
        raise ConfigError(
            "invalid configuration: api.auth.enabled is true (as in the production profile) "
            "but neither API_KEYS nor JWT_SECRET is set: no caller could be let in; set one "
            '(TASKLAB_API_KEYS=\'{"KEY": ["Admin"]}\', TASKLAB_JWT_SECRET=$(openssl rand '
            "-hex 32)) or set TASKLAB_API__AUTH__ENABLED=false"
        )


def load_settings(**overrides: Any) -> Settings:
    """Build a fresh Settings; raise ConfigError (one line) if anything is invalid."""
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
    except SettingsError as err:
        # A list or table given in the environment that is not JSON.
        raise ConfigError(
            f"invalid configuration: {err}; a list or table in the environment must be JSON"
        ) from None
    check_transport_limits(settings)
    return settings


# --8<-- [start:get-settings]
@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


# --8<-- [end:get-settings]
