"""Settings from ``BATON_*`` environment variables (pydantic-settings).

Credentials arrive only through these settings; use :func:`redact` before a URL is logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SENTINEL_SCHEME = "redis+sentinel://"


class BatonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis for handoff state, results and (by default) the broker. "
        "Unset: an embedded redis-server is started under BATON_HOME.",
    )
    broker_url: str | None = Field(
        default=None, description="Broker override (default: redis_url)."
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Password of the Redis in redis_url (and of a redis:// broker_url) when "
        "the URL has none of its own; any characters (percent-encoded into the URL here).",
    )
    sentinel_password: SecretStr | None = Field(
        default=None,
        description="Password of the Sentinels of a redis+sentinel:// URL, when they have "
        "their own (the URL's password is the data nodes').",
    )
    failover_timeout: float = Field(
        default=30.0,
        description="Seconds a command keeps trying through a failover (a refused, reset or "
        "read-only primary) before it fails.",
    )
    min_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas that must acknowledge a write (WAIT) before it counts; default "
        "1 on a redis+sentinel:// URL, 0 on a redis:// one.",
    )
    replica_timeout_ms: int = Field(
        default=1000, ge=1, description="How long a write waits for its replicas (ms)."
    )
    key_prefix: str = Field(default="baton", description="Prefix of every Redis key Baton writes.")
    home: Path = Field(default=Path(".baton"), description="Embedded Redis files and reports.")
    reports_dir: Path | None = Field(
        default=None, description="Where reports go (default HOME/reports)."
    )
    agent_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated modules that register user agents."
    )
    retention_seconds: int = Field(default=7 * 24 * 3600, description="TTL of finished workflows.")
    visibility_timeout: int = Field(default=3600, description="Redis transport redelivery timeout.")
    result_expires: int = Field(default=24 * 3600, description="TTL of Celery's own task results.")
    step_lease_seconds: float = Field(
        default=30.0, description="A running step's lease, renewed every third of it."
    )
    max_output_bytes: int = Field(
        default=64 * 2**20, description="Largest step output (JSON bytes) committed to state."
    )
    max_input_bytes: int = Field(
        default=64 * 2**20,
        description="Largest workflow parameters, or signal payload, (JSON bytes) taken in.",
    )
    stall_seconds: float = Field(
        default=120.0, description="No progress and no live lease this long: the reaper acts."
    )
    reaper_interval: float = Field(default=15.0, description="Seconds between reaper sweeps.")
    max_reaps: int = Field(
        default=3, description="Re-dispatches of a stalled workflow before it is failed."
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Worker log lines as text or one JSON object each."
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None, description="user:password for `baton flower` (Flower's basic auth)."
    )
    dashboard_basic_auth: SecretStr | None = Field(
        default=None, description="user:password that every dashboard page, API and /metrics ask."
    )
    llm_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API of the llm agent (the URL before /chat/completions).",
    )
    llm_api_key: SecretStr | None = Field(
        default=None,
        description="The llm agent's API key (api_key_id 'default'; another id X reads "
        "BATON_LLM_API_KEY_X).",
    )
    llm_model: str = Field(default="gpt-4o-mini", description="The llm agent's default model.")

    @field_validator("agent_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)
        ):
            raise ValueError(
                "must be a redis://, rediss://, unix:// or redis+sentinel:// URL, "
                f"not {redact(value)!r}"
            )
        return value

    @model_validator(mode="after")
    def _add_password(self) -> BatonSettings:
        """The one place BATON_REDIS_PASSWORD goes into the URLs every client connects with."""
        secret = self.redis_password.get_secret_value() if self.redis_password else ""
        if secret:
            self.redis_url = with_password(self.redis_url, secret)
            if self.broker_url and self.broker_url.startswith(
                ("redis://", "rediss://", SENTINEL_SCHEME)
            ):
                self.broker_url = with_password(self.broker_url, secret)
        return self

    @property
    def sentinel(self) -> bool:
        """Whether Redis is reached through Sentinels (a ``redis+sentinel://`` URL)."""
        return bool(self.redis_url and self.redis_url.startswith(SENTINEL_SCHEME))

    @property
    def write_replicas(self) -> int:
        """Replicas a write must reach before it counts (``min_replicas`` or its default)."""
        return self.min_replicas if self.min_replicas is not None else int(self.sentinel)

    @property
    def reports_path(self) -> Path:
        return self.reports_dir or self.home / "reports"


@lru_cache(maxsize=1)
def get_settings() -> BatonSettings:
    return BatonSettings()


def with_password(url: str | None, password: str) -> str | None:
    """``url`` with ``password`` (percent-encoded) as its password, unless it has its own
    (or does not parse: the URL check reports that, naming the setting)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        if parts.password:
            return url
    except ValueError:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]  # as written (already encoded)
    netloc = f"{user}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
