"""Configuration: read once from the environment, validated, frozen, passed down.

Nothing else in memoryd reads ``os.environ``. Every variable is listed in README.md's
configuration table and in ``.env.example``; a bad value raises `ConfigError` with one
line naming the variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from memoryd.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("kv", "json")
STORAGE_BACKENDS = ("local", "s3")
TRANSCRIPTION_PROVIDERS = ("auto", "local", "openai", "whisper")
MIB = 1024 * 1024
EMBEDDERS = ("local", "openai", "none")
VECTOR_STORES = ("auto", "pgvector", "pinecone", "none")


@dataclass(frozen=True)
class RateLimit:
    """``limit`` requests per ``window`` seconds; ``limit == 0`` switches it off."""

    limit: int
    window: float

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s" if self.enabled else "off"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: str | None = None
    jwt_private_key_file: Path | None = None
    log_level: str = "info"
    log_format: str = "kv"
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 7 * 24 * 3600
    rate_limit_auth: RateLimit = RateLimit(5, 15 * 60)
    rate_limit_api: RateLimit = RateLimit(100, 15 * 60)
    rate_limit_upload: RateLimit = RateLimit(10, 3600)
    rate_limit_ai: RateLimit = RateLimit(50, 3600)
    trust_proxy: bool = False
    max_body_bytes: int = 1024 * 1024
    db_pool_min: int = 2
    db_pool_max: int = 20
    shutdown_timeout: float = 10.0
    ws_hello_timeout: float = 10.0
    ws_heartbeat: float = 30.0
    ws_max_frame_bytes: int = 64 * 1024
    max_content_chars: int = 10_000
    ws_max_queue: int = 1024
    ws_stall_timeout: float = 30.0
    ws_requests_per_second: float = 20.0
    ws_request_burst: int = 60
    ws_max_sockets_per_user: int = 10
    send_one_statement: bool = True  # a plain send in one statement, with group commit
    ack_flush_interval: float = 1.0
    event_retention_days: int = 30
    presence_ttl: float = 30.0
    redis_poll_interval: float = 1.0
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_chat_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    ai_reply_wait: float = 10.0
    ai_timeout: float = 60.0
    ai_max_retries: int = 2
    ai_max_concurrent: int = 3
    whatsapp_app_secret: str | None = None
    whatsapp_verify_token: str | None = None
    whatsapp_graph_url: str = "https://graph.facebook.com/v21.0"
    whatsapp_webhook_url: str | None = None
    whatsapp_send_rate: float = 80.0
    whatsapp_max_media_bytes: int = 100 * 1024 * 1024
    pinecone_api_key: str | None = None
    pinecone_index: str = "memory-embeddings"
    pinecone_host: str | None = None  # the index's data-plane URL (PINECONE_INDEX_HOST)
    embedder: str = "local"  # local | openai | none
    embedding_dimension: int | None = None  # None: the embedder's own (local 256, openai 1536)
    vector_store: str = "auto"  # auto (pinecone when PINECONE_API_KEY, else pgvector) | ...
    search_text_weight: float = 1.0
    search_semantic_weight: float = 1.0
    search_min_similarity: float | None = None  # None: the embedder's (local 0.1, openai 0.2)
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    # files and voice
    storage_backend: str = "local"
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_presign_seconds: int = 0
    files_max_image_bytes: int = 20 * MIB
    files_max_audio_bytes: int = 25 * MIB
    files_max_video_bytes: int = 100 * MIB
    files_max_document_bytes: int = 100 * MIB
    files_quota_bytes: int = 1024 * MIB
    transcription_provider: str = "auto"
    openai_transcription_model: str = "whisper-1"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); CLI flags come as overrides."""
        e = _Env(os.environ if env is None else env)
        settings = cls(
            data_dir=Path(e.text("MEMORYD_DATA_DIR") or "data"),
            database_url=e.url("DATABASE_URL", ("postgres", "postgresql")),
            redis_url=e.url("REDIS_URL", ("redis", "rediss", "unix")),
            secret_key=e.secret("MEMORYD_SECRET_KEY"),
            jwt_private_key_file=e.path("MEMORYD_JWT_PRIVATE_KEY_FILE"),
            log_level=e.choice("MEMORYD_LOG_LEVEL", LOG_LEVELS, "info"),
            log_format=e.choice("MEMORYD_LOG_FORMAT", LOG_FORMATS, "kv"),
            access_token_ttl=e.integer("MEMORYD_ACCESS_TOKEN_TTL", 15 * 60, minimum=10),
            refresh_token_ttl=e.integer("MEMORYD_REFRESH_TOKEN_TTL", 7 * 24 * 3600, minimum=60),
            rate_limit_auth=e.rate("MEMORYD_RATE_LIMIT_AUTH", cls.rate_limit_auth),
            rate_limit_api=e.rate("MEMORYD_RATE_LIMIT_API", cls.rate_limit_api),
            rate_limit_upload=e.rate("MEMORYD_RATE_LIMIT_UPLOAD", cls.rate_limit_upload),
            rate_limit_ai=e.rate("MEMORYD_RATE_LIMIT_AI", cls.rate_limit_ai),
            trust_proxy=e.flag("MEMORYD_TRUST_PROXY", False),
            max_body_bytes=e.integer("MEMORYD_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            db_pool_min=e.integer("MEMORYD_DB_POOL_MIN", 2, minimum=1),
            db_pool_max=e.integer("MEMORYD_DB_POOL_MAX", 20, minimum=1),
            shutdown_timeout=float(e.integer("MEMORYD_SHUTDOWN_TIMEOUT", 10, minimum=1)),
            ws_hello_timeout=float(e.integer("MEMORYD_WS_HELLO_TIMEOUT", 10, minimum=1)),
            ws_heartbeat=float(e.integer("MEMORYD_WS_HEARTBEAT", 30, minimum=1)),
            ws_max_frame_bytes=e.integer("MEMORYD_WS_MAX_FRAME_BYTES", 64 * 1024, minimum=1024),
            max_content_chars=e.integer("MEMORYD_MAX_CONTENT_CHARS", 10_000, minimum=1),
            ws_max_queue=e.integer("MEMORYD_WS_MAX_QUEUE", 1024, minimum=16),
            ws_stall_timeout=e.seconds("MEMORYD_WS_STALL_TIMEOUT", 30.0),
            ws_requests_per_second=e.seconds("MEMORYD_WS_REQUESTS_PER_SECOND", 20.0),
            ws_request_burst=e.integer("MEMORYD_WS_REQUEST_BURST", 60, minimum=1),
            ws_max_sockets_per_user=e.integer("MEMORYD_WS_MAX_SOCKETS_PER_USER", 10, minimum=1),
            send_one_statement=e.flag("MEMORYD_SEND_ONE_STATEMENT", True),
            event_retention_days=e.integer("MEMORYD_EVENT_RETENTION_DAYS", 30, minimum=1),
            presence_ttl=float(e.integer("MEMORYD_PRESENCE_TTL", 30, minimum=3)),
            redis_poll_interval=e.seconds("MEMORYD_REDIS_POLL_INTERVAL", 1.0),
            openai_api_key=e.text("OPENAI_API_KEY"),
            openai_base_url=e.url("OPENAI_BASE_URL", ("http", "https")),
            openai_chat_model=e.text("OPENAI_CHAT_MODEL") or cls.openai_chat_model,
            openai_embedding_model=e.text("OPENAI_EMBEDDING_MODEL") or cls.openai_embedding_model,
            ai_reply_wait=e.seconds("MEMORYD_AI_REPLY_WAIT", cls.ai_reply_wait),
            ai_timeout=e.seconds("MEMORYD_AI_TIMEOUT", cls.ai_timeout),
            ai_max_retries=e.integer("MEMORYD_AI_MAX_RETRIES", cls.ai_max_retries),
            ai_max_concurrent=e.integer("MEMORYD_AI_MAX_CONCURRENT", 3, minimum=1),
            whatsapp_app_secret=e.text("WHATSAPP_APP_SECRET"),
            whatsapp_verify_token=e.text("WHATSAPP_VERIFY_TOKEN"),
            whatsapp_graph_url=e.url("WHATSAPP_GRAPH_URL", ("http", "https"))
            or cls.whatsapp_graph_url,
            whatsapp_webhook_url=e.url("WHATSAPP_WEBHOOK_URL", ("http", "https")),
            whatsapp_send_rate=e.seconds("WHATSAPP_SEND_RATE", 80.0),
            whatsapp_max_media_bytes=e.integer(
                "WHATSAPP_MAX_MEDIA_BYTES", 100 * 1024 * 1024, minimum=1024
            ),
            pinecone_api_key=e.text("PINECONE_API_KEY"),
            pinecone_index=e.text("PINECONE_INDEX") or cls.pinecone_index,
            pinecone_host=e.url("PINECONE_INDEX_HOST", ("http", "https")),
            embedder=e.choice("MEMORYD_EMBEDDER", EMBEDDERS, "local"),
            embedding_dimension=e.integer("MEMORYD_EMBEDDING_DIMENSION", 0, minimum=0) or None,
            vector_store=e.choice("MEMORYD_VECTOR_STORE", VECTOR_STORES, "auto"),
            search_text_weight=e.seconds("MEMORYD_SEARCH_TEXT_WEIGHT", 1.0),
            search_semantic_weight=e.seconds("MEMORYD_SEARCH_SEMANTIC_WEIGHT", 1.0),
            search_min_similarity=e.fraction("MEMORYD_SEARCH_MIN_SIMILARITY"),
            google_client_id=e.text("GOOGLE_CLIENT_ID"),
            google_client_secret=e.text("GOOGLE_CLIENT_SECRET"),
            google_token_url=e.url("GOOGLE_TOKEN_URL", ("http", "https")) or cls.google_token_url,
            google_jwks_url=e.url("GOOGLE_JWKS_URL", ("http", "https")) or cls.google_jwks_url,
            storage_backend=e.choice("MEMORYD_STORAGE_BACKEND", STORAGE_BACKENDS, "local"),
            s3_bucket=e.text("MEMORYD_S3_BUCKET"),
            s3_region=e.text("MEMORYD_S3_REGION") or cls.s3_region,
            s3_endpoint_url=e.url("MEMORYD_S3_ENDPOINT_URL", ("http", "https")),
            s3_access_key_id=e.text("MEMORYD_S3_ACCESS_KEY_ID"),
            s3_secret_access_key=e.text("MEMORYD_S3_SECRET_ACCESS_KEY"),
            s3_presign_seconds=e.integer("MEMORYD_S3_PRESIGN_SECONDS", 0),
            files_max_image_bytes=e.integer("MEMORYD_FILES_MAX_IMAGE_BYTES", 20 * MIB, minimum=1),
            files_max_audio_bytes=e.integer("MEMORYD_FILES_MAX_AUDIO_BYTES", 25 * MIB, minimum=1),
            files_max_video_bytes=e.integer("MEMORYD_FILES_MAX_VIDEO_BYTES", 100 * MIB, minimum=1),
            files_max_document_bytes=e.integer(
                "MEMORYD_FILES_MAX_DOCUMENT_BYTES", 100 * MIB, minimum=1
            ),
            files_quota_bytes=e.integer("MEMORYD_FILES_QUOTA_BYTES", 1024 * MIB, minimum=1),
            transcription_provider=e.choice(
                "MEMORYD_TRANSCRIPTION_PROVIDER", TRANSCRIPTION_PROVIDERS, "auto"
            ),
            openai_transcription_model=e.text("OPENAI_TRANSCRIPTION_MODEL")
            or cls.openai_transcription_model,
        )
        if settings.storage_backend == "s3" and not settings.s3_bucket:
            raise ConfigError("MEMORYD_STORAGE_BACKEND=s3 needs MEMORYD_S3_BUCKET")
        if settings.db_pool_min > settings.db_pool_max:
            raise ConfigError("MEMORYD_DB_POOL_MIN must not exceed MEMORYD_DB_POOL_MAX")
        return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


class _Env:
    """Typed reads of environment variables; each failure names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None

    def secret(self, name: str) -> str | None:
        value = self.text(name)
        if value is not None and len(value) < 32:
            raise ConfigError(f"{name} must be at least 32 characters long (got {len(value)})")
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes:
            wanted = ", ".join(f"{s}://" for s in schemes)
            raise ConfigError(f"{name} must be a URL starting with {wanted} (got {value!r})")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.text(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)} (got {value!r})")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer (got {raw!r})") from None
        if value < minimum:
            raise ConfigError(f"{name} must be >= {minimum} (got {value})")
        return value

    def seconds(self, name: str, default: float) -> float:
        """A positive number from 0.05 to 3600 (seconds, or a rate per second)."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.05 <= value <= 3600:
            raise ConfigError(f"{name} must be a number from 0.05 to 3600 (got {raw!r})")
        return value

    def fraction(self, name: str) -> float | None:
        """A number from 0 to 1, or None when unset."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise ConfigError(f"{name} must be a number from 0 to 1 (got {raw!r})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false (got {raw!r})")

    def rate(self, name: str, default: RateLimit) -> RateLimit:
        """``LIMIT/SECONDS`` (``100/900``), or ``off``."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("off", "0"):
            return RateLimit(0, default.window)
        limit, sep, window = raw.partition("/")
        try:
            parsed = RateLimit(int(limit), float(window) if sep else default.window)
        except ValueError:
            parsed = RateLimit(-1, 0)
        if parsed.limit < 1 or not 0 < parsed.window < math.inf:  # also rejects nan
            raise ConfigError(
                f"{name} must look like LIMIT/SECONDS, e.g. 100/900, or off (got {raw!r})"
            )
        return parsed
