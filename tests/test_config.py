"""`Settings.from_env`: defaults, every variable parsed, one clear error per bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memoryd.config import RateLimit, Settings
from memoryd.errors import ConfigError

pytestmark = pytest.mark.storage


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.data_dir == Path("data")
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.log_level == "info"
    assert settings.access_token_ttl == 900
    assert settings.refresh_token_ttl == 7 * 24 * 3600
    # The seed's limits: auth 5/15 min, api 100/15 min, upload 10/h, ai 50/h.
    assert settings.rate_limit_auth == RateLimit(5, 900)
    assert settings.rate_limit_api == RateLimit(100, 900)
    assert settings.rate_limit_upload == RateLimit(10, 3600)
    assert settings.rate_limit_ai == RateLimit(50, 3600)
    assert settings.google_client_id is None
    assert settings.google_token_url == "https://oauth2.googleapis.com/token"
    assert settings.google_jwks_url == "https://www.googleapis.com/oauth2/v3/certs"


def test_blank_values_count_as_unset() -> None:
    assert Settings.from_env({"DATABASE_URL": "  ", "MEMORYD_LOG_LEVEL": ""}) == Settings()


SECRET = "s" * 32


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("MEMORYD_DATA_DIR", "/var/lib/memoryd", "data_dir", Path("/var/lib/memoryd")),
        ("DATABASE_URL", "postgres://u:p@db/m", "database_url", "postgres://u:p@db/m"),
        ("DATABASE_URL", "postgresql://db/m", "database_url", "postgresql://db/m"),
        ("REDIS_URL", "redis://cache:6379/0", "redis_url", "redis://cache:6379/0"),
        ("REDIS_URL", "rediss://cache:6380", "redis_url", "rediss://cache:6380"),
        ("MEMORYD_SECRET_KEY", SECRET, "secret_key", SECRET),
        (
            "MEMORYD_JWT_PRIVATE_KEY_FILE",
            "/run/key.pem",
            "jwt_private_key_file",
            Path("/run/key.pem"),
        ),
        ("MEMORYD_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("MEMORYD_LOG_FORMAT", "json", "log_format", "json"),
        ("MEMORYD_ACCESS_TOKEN_TTL", "60", "access_token_ttl", 60),
        ("MEMORYD_REFRESH_TOKEN_TTL", "3600", "refresh_token_ttl", 3600),
        ("MEMORYD_RATE_LIMIT_AUTH", "10/60", "rate_limit_auth", RateLimit(10, 60)),
        ("MEMORYD_RATE_LIMIT_API", "100/900", "rate_limit_api", RateLimit(100, 900)),
        ("MEMORYD_RATE_LIMIT_API", "250", "rate_limit_api", RateLimit(250, 900)),
        ("MEMORYD_RATE_LIMIT_UPLOAD", "3/0.5", "rate_limit_upload", RateLimit(3, 0.5)),
        ("MEMORYD_RATE_LIMIT_AI", "off", "rate_limit_ai", RateLimit(0, 3600)),
        ("MEMORYD_RATE_LIMIT_AI", "OFF", "rate_limit_ai", RateLimit(0, 3600)),
        ("MEMORYD_RATE_LIMIT_AUTH", "0", "rate_limit_auth", RateLimit(0, 900)),
        ("MEMORYD_TRUST_PROXY", "yes", "trust_proxy", True),
        ("MEMORYD_TRUST_PROXY", "0", "trust_proxy", False),
        ("MEMORYD_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
        ("MEMORYD_DB_POOL_MIN", "1", "db_pool_min", 1),
        ("MEMORYD_DB_POOL_MAX", "50", "db_pool_max", 50),
        ("MEMORYD_SHUTDOWN_TIMEOUT", "3", "shutdown_timeout", 3.0),
        ("MEMORYD_WS_HELLO_TIMEOUT", "5", "ws_hello_timeout", 5.0),
        ("MEMORYD_WS_HEARTBEAT", "15", "ws_heartbeat", 15.0),
        ("MEMORYD_WS_MAX_FRAME_BYTES", "4096", "ws_max_frame_bytes", 4096),
        ("MEMORYD_MAX_CONTENT_CHARS", "500", "max_content_chars", 500),
        ("MEMORYD_WS_MAX_QUEUE", "64", "ws_max_queue", 64),
        ("MEMORYD_WS_REQUESTS_PER_SECOND", "5", "ws_requests_per_second", 5.0),
        ("MEMORYD_WS_REQUEST_BURST", "7", "ws_request_burst", 7),
        ("MEMORYD_WS_MAX_SOCKETS_PER_USER", "2", "ws_max_sockets_per_user", 2),
        ("MEMORYD_EVENT_RETENTION_DAYS", "7", "event_retention_days", 7),
        ("OPENAI_API_KEY", "sk-test", "openai_api_key", "sk-test"),
        (
            "OPENAI_BASE_URL",
            "http://localhost:11434/v1",
            "openai_base_url",
            "http://localhost:11434/v1",
        ),
        ("OPENAI_CHAT_MODEL", "llama3", "openai_chat_model", "llama3"),
        ("OPENAI_EMBEDDING_MODEL", "nomic", "openai_embedding_model", "nomic"),
        ("WHATSAPP_APP_SECRET", "app-secret", "whatsapp_app_secret", "app-secret"),
        ("WHATSAPP_VERIFY_TOKEN", "verify", "whatsapp_verify_token", "verify"),
        (
            "WHATSAPP_GRAPH_URL",
            "http://localhost:9000",
            "whatsapp_graph_url",
            "http://localhost:9000",
        ),
        ("PINECONE_API_KEY", "pc-key", "pinecone_api_key", "pc-key"),
        ("PINECONE_INDEX", "idx", "pinecone_index", "idx"),
        ("GOOGLE_CLIENT_ID", "id.apps", "google_client_id", "id.apps"),
        ("GOOGLE_CLIENT_SECRET", "GOCSPX", "google_client_secret", "GOCSPX"),
        (
            "GOOGLE_TOKEN_URL",
            "http://127.0.0.1:1/token",
            "google_token_url",
            "http://127.0.0.1:1/token",
        ),
        ("GOOGLE_JWKS_URL", "https://g.test/certs", "google_jwks_url", "https://g.test/certs"),
    ],
)
def test_each_variable_is_parsed(variable: str, value: str, attribute: str, expected: Any) -> None:
    settings = Settings.from_env({variable: value})
    assert getattr(settings, attribute) == expected
    # ... and nothing else moved.
    assert settings.replace(**{attribute: getattr(Settings(), attribute)}) == Settings()


def test_rate_limit_off_is_disabled() -> None:
    settings = Settings.from_env({"MEMORYD_RATE_LIMIT_API": "off"})
    assert not settings.rate_limit_api.enabled
    assert str(settings.rate_limit_api) == "off"
    assert settings.rate_limit_auth.enabled
    assert str(settings.rate_limit_auth) == "5/900s"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "db.example.com:5432"),
        ("REDIS_URL", "http://cache"),
        ("OPENAI_BASE_URL", "ftp://models"),
        ("GOOGLE_TOKEN_URL", "oauth2.googleapis.com/token"),
        ("MEMORYD_SECRET_KEY", "short"),
        ("MEMORYD_SECRET_KEY", "s" * 31),
        ("MEMORYD_LOG_LEVEL", "loud"),
        ("MEMORYD_LOG_FORMAT", "xml"),
        ("MEMORYD_ACCESS_TOKEN_TTL", "15m"),
        ("MEMORYD_ACCESS_TOKEN_TTL", "5"),
        ("MEMORYD_REFRESH_TOKEN_TTL", "-1"),
        ("MEMORYD_MAX_BODY_BYTES", "10"),
        ("MEMORYD_DB_POOL_MAX", "0"),
        ("MEMORYD_WS_MAX_QUEUE", "1.5"),
        ("MEMORYD_TRUST_PROXY", "maybe"),
        ("MEMORYD_RATE_LIMIT_API", "abc"),
        ("MEMORYD_RATE_LIMIT_API", "100/"),
        ("MEMORYD_RATE_LIMIT_API", "100/0"),
        ("MEMORYD_RATE_LIMIT_API", "-5/900"),
        ("MEMORYD_RATE_LIMIT_AUTH", "/900"),
        ("MEMORYD_RATE_LIMIT_UPLOAD", "10/abc"),
        ("MEMORYD_RATE_LIMIT_UPLOAD", "10/nan"),
        ("MEMORYD_RATE_LIMIT_AI", "10/inf"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(variable), message
    assert "\n" not in message


def test_pool_min_above_max_is_an_error() -> None:
    with pytest.raises(ConfigError, match="MEMORYD_DB_POOL_MIN"):
        Settings.from_env({"MEMORYD_DB_POOL_MIN": "30", "MEMORYD_DB_POOL_MAX": "10"})


def test_cli_flags_override_the_environment() -> None:
    settings = Settings.from_env(
        {"MEMORYD_DATA_DIR": "/from/env"}, host="0.0.0.0", port=9000, data_dir=None
    )
    assert settings.host == "0.0.0.0"
    assert settings.port == 9000
    assert settings.data_dir == Path("/from/env")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORYD_LOG_LEVEL", "error")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert Settings.from_env().log_level == "error"
