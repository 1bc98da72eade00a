"""Mira Console settings: one file, read from the environment.

Every value comes from an environment variable (a `.env` file beside manage.py is
read in development). The helpers below raise ImproperlyConfigured on a bad value
so that a typo stops the process at start-up instead of misbehaving later.
"""

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, default: str = "") -> str:
    """Read a secret from NAME, or from the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE cannot be read: {exc.strerror}") from None
    return os.environ.get(name, default)


DEBUG = env_bool("DEBUG", False)
TESTING = env_bool("MIRA_TESTING", False)

_DEV_SECRET = "django-insecure-development-only-key-do-not-use-in-production"
# Required when DEBUG is off: the console refuses to start without it (accounts.checks,
# config.asgi), but commands that sign nothing, such as `manage.py simulator`, run without.
SECRET_KEY = env_secret("SECRET_KEY") or (_DEV_SECRET if DEBUG or TESTING else "")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG or TESTING else []
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "console",
    "gateway",
    "upstream",
    "playground",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.console",
                "playground.job_centre.watch",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the ASGI server's threads write without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file, not shared memory: the live server's threads and worker
    # processes then see the same database, with SQLite's ordinary locking.
    # One file per test process, so that test runs side by side do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"mira-console-test-{os.getpid()}.sqlite3")
    }

REDIS_URL = env_str("REDIS_URL")
if TESTING and os.environ.get("PYTEST_XDIST_WORKER") and "MIRA_TEST_REDIS" not in os.environ:
    # Tests run side by side (pytest -n): each test process uses a Redis database of its
    # own (the URL's number plus its own), as it has its own test database. The console
    # processes a test starts inherit it, or use the URL the test gives them, unchanged.
    if REDIS_URL:
        _redis = urlsplit(REDIS_URL)
        _number = int(_redis.path.strip("/") or 0) + int(os.environ["PYTEST_XDIST_WORKER"][2:]) + 1
        REDIS_URL = os.environ["REDIS_URL"] = urlunsplit(_redis._replace(path=f"/{_number}"))
    os.environ["MIRA_TEST_REDIS"] = REDIS_URL
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "console.cache.ResilientRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # No socket timeout: a consumer's blocking read waits longer than redis-py's default.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"

# Sign-in (django-allauth): email and password, no open sign-up unless asked for.
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
ACCOUNT_RATE_LIMITS = {
    "login_failed": env_str("LOGIN_FAILED_RATE_LIMIT", "5/5m/ip,5/5m/key"),
}
ACCOUNT_OPEN_SIGNUP = env_bool("ACCOUNT_OPEN_SIGNUP", False)
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Mira Console")

INVITATION_DAYS = env_int("INVITATION_DAYS", 7)

# Email: printed to the console unless an SMTP host is configured.
if env_str("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": env_str("EMAIL_HOST"),
                "port": env_int("EMAIL_PORT", 587),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_secret("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", True),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Mira Console <console@localhost>")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# In development and tests WhiteNoise serves straight from the source folders.
WHITENOISE_USE_FINDERS = DEBUG or TESTING
WHITENOISE_AUTOREFRESH = DEBUG or TESTING
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
MEDIA_ROOT = Path(
    env_str("MEDIA_ROOT")
    or (
        Path(tempfile.gettempdir()) / f"mira-media-{os.getpid()}" if TESTING else BASE_DIR / "media"
    )
)
# Where the console keeps uploads and generated media: the local file system unless a
# django-storages backend (and its OPTIONS as JSON) is named.
STORAGES["media"] = {
    "BACKEND": env_str("MEDIA_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
    "OPTIONS": json.loads(env_str("MEDIA_STORAGE_OPTIONS", "") or "{}")
    or {"location": str(MEDIA_ROOT)},
}
# How long a signed link to a stored file works, and how long files are kept
# (`manage.py purgemedia` deletes older ones; 0 keeps them for ever).
MEDIA_LINK_SECONDS = env_int("MEDIA_LINK_SECONDS", 3600)
MEDIA_RETENTION_DAYS = env_int("MEDIA_RETENTION_DAYS", 30)
# The largest file `POST /v1/upload` takes (413 past it).
MEDIA_MAX_UPLOAD_BYTES = env_int("MEDIA_MAX_UPLOAD_BYTES", 20 * 1024 * 1024)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Content-Security-Policy: no inline script without the per-request nonce.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "media-src": [CSP.SELF, "data:", "blob:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG and not TESTING:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# The upstream: one node, a fleet file, or (neither) the built-in simulator.
MIRA_API_BASE = env_str("MIRA_API_BASE")
MIRA_API_KEY = env_secret("MIRA_API_KEY")
MIRA_FLEET_FILE = env_str("MIRA_FLEET_FILE")
MIRA_SIMULATOR = not (MIRA_API_BASE or MIRA_FLEET_FILE)

BILLING_CURRENCY = env_str("BILLING_CURRENCY", "USD")

# /metrics (gateway.health): with a token, scrapes send `Authorization: Bearer <token>`;
# without one, only loopback may read it.
METRICS_TOKEN = env_secret("METRICS_TOKEN")

# Log lines as text ("plain") or one JSON object each ("json"); every model call logs one
# line (logger "mira.calls", at INFO) with its request id, workspace, key prefix, product,
# model, node, status, latency and cost (gateway.calllog).
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "gateway.jsonlog.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "aiohttp": {"level": "WARNING"},
    },
}

# The /v1 gateway.
# Versions in the URL (seed 000): {"v1": {}} serves v1; a deprecated version names the
# version that serves it and its dates, e.g. {"v0": {"serves": "v1",
# "deprecated": date(2027, 1, 1), "sunset": date(2028, 1, 1), "link": "https://..."}}.
API_VERSIONS: dict[str, dict] = {"v1": {}}
GATEWAY_DEFAULT_RPM = env_int("GATEWAY_DEFAULT_RPM", 100_000)
GATEWAY_DEFAULT_TPM = env_int("GATEWAY_DEFAULT_TPM", 100_000_000)
GATEWAY_MAX_JSON_BYTES = env_int("GATEWAY_MAX_JSON_BYTES", 2 * 1024 * 1024)
GATEWAY_MAX_UPLOAD_BYTES = env_int("GATEWAY_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
# A JSON body that carries files as base64 (uploads, reference images): the largest
# upload, a third larger for base64, and room for the rest.
GATEWAY_MAX_MEDIA_JSON_BYTES = env_int(
    "GATEWAY_MAX_MEDIA_JSON_BYTES", MEDIA_MAX_UPLOAD_BYTES * 4 // 3 + 1024 * 1024
)
GATEWAY_KEEPALIVE_SECONDS = float(env_int("GATEWAY_KEEPALIVE_SECONDS", 15))
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_UPLOAD_BYTES + 1024 * 1024
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 4096)
# Realtime sessions (gateway.realtime): the longest one, how long one may stay silent both
# ways, how many one key (or member) may hold open at once, and the origins of other sites
# whose pages may open them with a key (comma-separated; a program sends no origin).
GATEWAY_REALTIME_MAX_SECONDS = env_float("GATEWAY_REALTIME_MAX_SECONDS", 1800.0)
GATEWAY_REALTIME_IDLE_SECONDS = env_float("GATEWAY_REALTIME_IDLE_SECONDS", 120.0)
GATEWAY_REALTIME_SESSIONS_PER_KEY = env_int("GATEWAY_REALTIME_SESSIONS_PER_KEY", 10)
GATEWAY_REALTIME_ORIGINS = env_list("GATEWAY_REALTIME_ORIGINS", [])
# POST /v1/fetch (gateway.fetch): the ports a page may be fetched from, names or networks
# lifted from the address rules (an internal site; off by default), and the caps on
# connecting, the whole fetch (redirects included) and the decoded body.
FETCH_PORTS = [int(port) for port in env_list("FETCH_PORTS", ["80", "443"])]
FETCH_ALLOW = env_list("FETCH_ALLOW", [])
FETCH_CONNECT_SECONDS = env_float("FETCH_CONNECT_SECONDS", 5.0)
FETCH_TIMEOUT_SECONDS = env_float("FETCH_TIMEOUT_SECONDS", 20.0)
FETCH_MAX_BYTES = env_int("FETCH_MAX_BYTES", 5 * 1024 * 1024)
FETCH_MAX_REDIRECTS = 5
# Holds older than this are taken to be left by a crashed worker (`manage.py releaseholds`).
STALE_HOLD_MINUTES = env_int("STALE_HOLD_MINUTES", 30)
DEFAULT_ALERT_THRESHOLDS = [50, 80, 100]
# Threads for the gateway's database work (holds, bookings); 0: one for SQLite, four otherwise.
GATEWAY_DB_THREADS = env_int("GATEWAY_DB_THREADS", 0)
# Finished calls are written to the database in batches, this often (console.books).
# Tests write them when they ask (books.drain), so that nothing is written behind them.
GATEWAY_BOOK_SECONDS = env_float("GATEWAY_BOOK_SECONDS", 0.0 if TESTING else 0.25)
# Music and video jobs (gateway.job_runner): each serving worker runs a runner that polls
# and settles them unless this is off (then run `manage.py runjobs`); tests start their own.
GATEWAY_JOB_RUNNER = env_bool("GATEWAY_JOB_RUNNER", not TESTING)
GATEWAY_JOB_IDLE_SECONDS = env_float("GATEWAY_JOB_IDLE_SECONDS", 0.5)
GATEWAY_JOB_POLL_MAX_SECONDS = env_float("GATEWAY_JOB_POLL_MAX_SECONDS", 15.0)
GATEWAY_JOB_CLAIM_SECONDS = env_float("GATEWAY_JOB_CLAIM_SECONDS", 60.0)
GATEWAY_JOB_GIVE_UP_SECONDS = env_float("GATEWAY_JOB_GIVE_UP_SECONDS", 600.0)
# Where each worker journals the calls it answered until they are written (console.journal):
# a local disk, one directory per database. Each test process has one of its own.
GATEWAY_JOURNAL_DIR = Path(
    env_str("GATEWAY_JOURNAL_DIR")
    or (
        Path(tempfile.gettempdir()) / f"mira-console-journal-{os.getpid()}"
        if TESTING
        else BASE_DIR / "journal"
    )
)
