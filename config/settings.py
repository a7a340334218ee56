"""SLM Fleet settings: one module, driven by environment variables.

Embedded mode (no DATABASE_URL / REDIS_URL): SQLite under FLEET_STATE_DIR and the Valkey server
runfleet starts there (a file-system broker for a process started without it), generated
secrets persisted there with mode 0600. Production
(FLEET_ENV=production): PostgreSQL + Redis and every secure setting on; required variables
missing or malformed stop the process at start with a message naming the variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from celery.schedules import crontab
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config import process
from config.broker import broker
from config.env import EnvReader, persistent_secret

env = EnvReader()

BASE_DIR = Path(__file__).resolve().parent.parent
FLEET_ENV = env.choice("FLEET_ENV", "development", ("development", "production"))
PRODUCTION = FLEET_ENV == "production"
STATE_DIR = Path(env.string("FLEET_STATE_DIR", str(BASE_DIR / "var"))).resolve()
FLEET_VERSION = "0.1.0"

# --- Core -----------------------------------------------------------------------------------
SECRET_KEY = env.secret("SECRET_KEY", required=PRODUCTION) or persistent_secret(
    STATE_DIR / "secret_key"
)
DEBUG = env.boolean("FLEET_DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("FLEET_DEBUG cannot be on with FLEET_ENV=production.")

ALLOWED_HOSTS = env.strings(
    "ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set with FLEET_ENV=production.")
CSRF_TRUSTED_ORIGINS = env.strings("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "channels",
    "core",
    "fleet",
    "models_catalog",
    "deployments",
    "monitoring",
    "gateway",
    "benchmarks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.middleware.RequestContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    # last: it wraps the view in the transaction that also records the Idempotency-Key
    "core.idempotency.IdempotencyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.console",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
_default_db = f"sqlite:///{STATE_DIR / 'fleet.sqlite3'}"
if PRODUCTION and not env.is_set("DATABASE_URL"):
    raise ImproperlyConfigured("DATABASE_URL must be set with FLEET_ENV=production.")
DATABASES = {
    "default": env.database(
        "DATABASE_URL",
        _default_db,
        # seconds a connection is reused; 0 closes it after each request
        conn_max_age=env.integer("FLEET_DB_CONN_MAX_AGE", 60, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded mode runs web, worker and beat as separate processes on one file.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
# The ASGI web process borrows its PostgreSQL connections from a pool (psycopg_pool, Django's
# "pool" option). Django's ASGI handler runs each request's sync code on a thread of its own
# (asgiref's ThreadSensitiveContext), and persistent connections are kept per thread: without
# a pool every API request would open a connection (a new server process) and close it again,
# 3-5 ms before the view runs. Celery, beat and manage.py reuse one connection per thread.
# FLEET_DB_POOL: auto (pool in the ASGI web process), on (in every process) or off.
DB_POOL = env.choice("FLEET_DB_POOL", "auto", ("auto", "on", "off"))
_pool = {
    "min_size": 2,
    # at most this many connections per process (requests in flight, the agents' fast paths,
    # live sockets); a request waits up to FLEET_DB_POOL_TIMEOUT seconds for one
    "max_size": env.integer("FLEET_DB_POOL_SIZE", 20, minimum=2, maximum=500),
    "timeout": env.integer("FLEET_DB_POOL_TIMEOUT", 10, minimum=1, maximum=300),
    "name": "fleet",
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and (
    DB_POOL == "on" or (DB_POOL == "auto" and process.ASGI_WEB)
):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections instead
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = _pool
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Broker, Celery, Channels ---------------------------------------------------------------
REDIS_URL = env.url("REDIS_URL", schemes=("redis", "rediss", "unix"))
if PRODUCTION and not REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL must be set with FLEET_ENV=production.")

CELERY_TIMEZONE = "UTC"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "control"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# --- Nodes ----------------------------------------------------------------------------------
# A ready node with no heartbeat for this long (server receive time) becomes unreachable.
FLEET_NODE_GRACE_SECONDS = env.integer("FLEET_NODE_GRACE_SECONDS", 20, minimum=2)
FLEET_HEARTBEAT_INTERVAL_SECONDS = env.integer("FLEET_HEARTBEAT_INTERVAL_SECONDS", 5, minimum=1)
FLEET_LIVENESS_SWEEP_SECONDS = env.integer("FLEET_LIVENESS_SWEEP_SECONDS", 2, minimum=1)
FLEET_NODE_DISK_FREE_MIN_PERCENT = env.integer("FLEET_NODE_DISK_FREE_MIN_PERCENT", 10, minimum=0)
FLEET_NODE_CLOCK_SKEW_SECONDS = env.integer("FLEET_NODE_CLOCK_SKEW_SECONDS", 30, minimum=1)
# How long an order to a node stays valid; an agent that gets it later drops it.
FLEET_COMMAND_TTL_SECONDS = env.integer("FLEET_COMMAND_TTL_SECONDS", 60, minimum=5)
# A running job's lease: an agent or worker that stops renewing it this long loses the job,
# and the reconciler queues it again (resuming where it stopped).
FLEET_JOB_LEASE_SECONDS = env.integer("FLEET_JOB_LEASE_SECONDS", 60, minimum=5)
# How often the job reconciler runs (expired leases, lost messages).
FLEET_JOB_RECONCILE_SECONDS = env.integer("FLEET_JOB_RECONCILE_SECONDS", 10, minimum=1)
# Largest heartbeat body accepted (bytes).
FLEET_HEARTBEAT_MAX_BYTES = env.integer("FLEET_HEARTBEAT_MAX_BYTES", 262144, minimum=4096)
# --- Deployments (reconciler) ---------------------------------------------------------------
# How often every deployment is reconciled (beat), besides the nudges on every change.
FLEET_RECONCILE_SECONDS = env.integer("FLEET_RECONCILE_SECONDS", 2, minimum=1)
# Replicas on a node unreachable this long are placed elsewhere.
FLEET_RESCHEDULE_GRACE_SECONDS = env.integer("FLEET_RESCHEDULE_GRACE_SECONDS", 60, minimum=0)
# A container with the fleet's labels and no live replica is removed once this old.
FLEET_ORPHAN_GRACE_SECONDS = env.integer("FLEET_ORPHAN_GRACE_SECONDS", 60, minimum=0)
# A start or stop order with no answer is sent again after this long (and expires then).
FLEET_REPLICA_RESEND_SECONDS = env.integer("FLEET_REPLICA_RESEND_SECONDS", 15, minimum=2)
# How long one start order waits for health on the node (the agent runs one order at a time).
FLEET_REPLICA_START_WAIT_SECONDS = env.integer("FLEET_REPLICA_START_WAIT_SECONDS", 10, minimum=1)
# A scale-down drains a replica first (gateways stop routing to it, its requests finish);
# its container is stopped once no gateway has requests on it, or after this long.
FLEET_DRAIN_SECONDS = env.integer("FLEET_DRAIN_SECONDS", 60, minimum=0)
# How often (ms) the autoscaler looks at every autoscaled deployment (beat; docs/autoscaling.md).
FLEET_AUTOSCALE_MS = env.integer("FLEET_AUTOSCALE_MS", 1000, minimum=200)


def _port_range(name: str, default: str) -> tuple[int, int]:
    """``"20000-29999"`` as (low, high); refuses anything else, naming the variable."""
    raw = env.string(name, default)
    low, sep, high = raw.partition("-")
    try:
        bounds = (int(low), int(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None or not 1024 <= bounds[0] <= bounds[1] <= 65535:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a port range such as 20000-29999 (low-high, 1024-65535)."
        )
    return bounds


# Host ports given to replicas whose spec names no port (host networking: unique per node).
FLEET_REPLICA_PORT_RANGE = _port_range("FLEET_REPLICA_PORT_RANGE", "20000-29999")
# --- Monitoring (metric samples; docs/monitoring.md) ---------------------------------------
# Raw samples are kept this long, 1-minute rollups this long (partitions dropped after).
FLEET_METRICS_RAW_RETENTION_HOURS = env.integer("FLEET_METRICS_RAW_RETENTION_HOURS", 24, minimum=1)
FLEET_METRICS_ROLLUP_RETENTION_DAYS = env.integer(
    "FLEET_METRICS_ROLLUP_RETENTION_DAYS", 30, minimum=1
)
# Largest metrics batch accepted from an agent (bytes; a flush after an outage is large).
FLEET_METRICS_MAX_BYTES = env.integer("FLEET_METRICS_MAX_BYTES", 2 * 1024 * 1024, minimum=65536)
# Samples further in the future than this (agent clock ahead) are refused.
FLEET_METRICS_MAX_FUTURE_SECONDS = env.integer("FLEET_METRICS_MAX_FUTURE_SECONDS", 300, minimum=5)

CELERY_BEAT_SCHEDULE = {
    "clear-expired-sessions": {
        "task": "core.tasks.clear_expired_sessions",
        "schedule": crontab(minute=17),
    },
    "purge-idempotency-keys": {
        "task": "core.tasks.purge_idempotency_keys",
        "schedule": crontab(minute=47),
    },
    "fleet-liveness-sweep": {
        "task": "fleet.tasks.sweep_liveness",
        "schedule": float(FLEET_LIVENESS_SWEEP_SECONDS),
        "options": {"expires": float(FLEET_LIVENESS_SWEEP_SECONDS)},
    },
    # Jobs whose lease ran out go back to the queue; lost messages are sent again.
    "reconcile-jobs": {
        "task": "core.tasks.reconcile_jobs",
        "schedule": float(FLEET_JOB_RECONCILE_SECONDS),
        "options": {"expires": float(FLEET_JOB_RECONCILE_SECONDS)},
    },
    # Level-triggered: every deployment compared with what nodes report, side effects sent.
    "reconcile-deployments": {
        "task": "deployments.tasks.reconcile_all",
        "schedule": float(FLEET_RECONCILE_SECONDS),
        "options": {"expires": float(FLEET_RECONCILE_SECONDS)},
    },
    # Autoscaled deployments: signals read, desired replica counts set (docs/autoscaling.md).
    "autoscale-deployments": {
        "task": "deployments.tasks.autoscale",
        "schedule": FLEET_AUTOSCALE_MS / 1000,
        "options": {"expires": FLEET_AUTOSCALE_MS / 1000},
    },
    # Metric samples: 1-minute rollups, partitions ahead, retention (monitoring/tasks.py).
    "monitoring-rollups": {
        "task": "monitoring.tasks.roll_up",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    "monitoring-retention": {
        "task": "monitoring.tasks.maintain_partitions",
        "schedule": 600.0,
        "options": {"expires": 600.0},
    },
}
CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = broker(REDIS_URL, STATE_DIR)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # No REDIS_URL: runfleet starts a Valkey server for the embedded mode and hands its URL to
    # web, worker and beat (fleet/embedded_valkey.py). A process started without it (a bare
    # manage.py command, or where no Valkey binary exists) gets a file-system broker and an
    # in-process layer: its live updates reach only its own browsers (docs/decisions.md).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The broker URL handed to joining agents (they consume their own queue on it). Defaults to
# the control plane's own broker; set it when agents reach the broker by another address.
FLEET_AGENT_BROKER_URL = env.secret("FLEET_AGENT_BROKER_URL") or CELERY_BROKER_URL

# --- Model catalog and the fleet model store --------------------------------------------------
# The upstream hub the catalog imports from (a Hugging Face Hub compatible endpoint).
FLEET_HF_ENDPOINT = env.string("FLEET_HF_ENDPOINT", "https://huggingface.co").rstrip("/")
# Where the control plane keeps model files, content-addressed by sha256.
FLEET_MODEL_STORE = Path(env.string("FLEET_MODEL_STORE", str(STATE_DIR / "store")))
# With a front proxy (nginx), the mirror answers with X-Accel-Redirect to this internal
# location instead of streaming the file itself; empty = stream from Python.
FLEET_MIRROR_ACCEL_REDIRECT = env.string("FLEET_MIRROR_ACCEL_REDIRECT", "")
# How long the mirror's ASGI fast path trusts a credential and a repository's pin and files
# (seconds; a deleted model or revoked credential stops working within it); 0 = no cache.
FLEET_MIRROR_CACHE_SECONDS = env.integer("FLEET_MIRROR_CACHE_SECONDS", 5, minimum=0)
# Licences allowed for deployment until an admin changes the policy in the console.
FLEET_DEFAULT_ALLOWED_LICENCES = env.strings(
    "FLEET_DEFAULT_ALLOWED_LICENCES",
    [
        "apache-2.0",
        "mit",
        "bsd-2-clause",
        "bsd-3-clause",
        "isc",
        "cc-by-4.0",
        "cc0-1.0",
        "unlicense",
    ],
)

# --- Runtimes -------------------------------------------------------------------------------
# The image each runtime adapter runs (point them at an internal registry when air-gapped);
# a deployment may still name its own. See docs/runtimes.md.
FLEET_IMAGE_LLAMACPP = env.string("FLEET_IMAGE_LLAMACPP", "ghcr.io/ggml-org/llama.cpp:server")
FLEET_IMAGE_VLLM = env.string("FLEET_IMAGE_VLLM", "vllm/vllm-openai:latest")
FLEET_IMAGE_OLLAMA = env.string("FLEET_IMAGE_OLLAMA", "ollama/ollama:latest")
# "host": servers bind the replica's address on the host network; "bridge": they run in the
# container's own network namespace and the engine publishes the port on that address.
FLEET_CONTAINER_NETWORK = env.choice("FLEET_CONTAINER_NETWORK", "host", ("host", "bridge"))

# --- Prometheus export and alerts (docs/monitoring.md "Prometheus and Grafana") --------------
# A bearer token for Prometheus' scrapes of /api/v1/metrics and its service discovery (besides
# personal API tokens of read scope); empty: none.
FLEET_PROMETHEUS_TOKEN = env.secret("FLEET_PROMETHEUS_TOKEN")
# Networks (CIDR, comma-separated) whose scrapes need no credential (judged by REMOTE_ADDR).
FLEET_PROMETHEUS_ALLOWED_NETWORKS = env.networks("FLEET_PROMETHEUS_ALLOWED_NETWORKS")
# Alert thresholds, exported as fleet_alert_threshold and used by the console's alerts.
FLEET_ALERT_QUEUE_DEPTH = env.integer("FLEET_ALERT_QUEUE_DEPTH", 100, minimum=1)
FLEET_ALERT_GPU_MEMORY_PERCENT = env.integer(
    "FLEET_ALERT_GPU_MEMORY_PERCENT", 95, minimum=1, maximum=100
)
FLEET_ALERT_CRASHLOOP_REPLACEMENTS = env.integer("FLEET_ALERT_CRASHLOOP_REPLACEMENTS", 3, minimum=1)

# --- OpenAI-compatible gateway (/v1/, docs/gateway.md) ---------------------------------------
# Serve /v1/ from the web process (embedded); off when a separate gateway process serves it.
FLEET_GATEWAY_EMBEDDED = env.boolean("FLEET_GATEWAY_EMBEDDED", True)
# Largest request body accepted (bytes); larger ones get 413 naming the limit.
FLEET_GATEWAY_MAX_BODY_BYTES = env.integer(
    "FLEET_GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024
)
# How long opening a connection to a replica may take before another replica is tried (ms).
FLEET_GATEWAY_CONNECT_TIMEOUT_MS = env.integer("FLEET_GATEWAY_CONNECT_TIMEOUT_MS", 2000, minimum=10)
# How long a replica may stay silent (before the first byte, or between chunks) (seconds).
FLEET_GATEWAY_READ_TIMEOUT_SECONDS = env.integer(
    "FLEET_GATEWAY_READ_TIMEOUT_SECONDS", 300, minimum=1
)
# Other replicas tried after a connection error before the first byte.
FLEET_GATEWAY_RETRIES = env.integer("FLEET_GATEWAY_RETRIES", 2, minimum=0, maximum=10)
# A failing replica leaves the pool this long, doubling per failed probe up to 60 s.
FLEET_GATEWAY_EJECT_SECONDS = env.integer("FLEET_GATEWAY_EJECT_SECONDS", 5, minimum=1)
# How often the in-memory routing table (keys, aliases, replicas) is reloaded (ms); changes to
# keys and aliases also reach every gateway at once over Redis pub/sub.
FLEET_GATEWAY_REFRESH_MS = env.integer("FLEET_GATEWAY_REFRESH_MS", 1000, minimum=100)
# Where the control worker reaches the gateway's /v1/ for benchmark and test-suite runs on a
# deployment (runfleet sets it from its own port; the compose stack names the web service).
FLEET_GATEWAY_URL = env.string("FLEET_GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/")
# Keep-alive connections per replica.
FLEET_GATEWAY_POOL_SIZE = env.integer("FLEET_GATEWAY_POOL_SIZE", 100, minimum=1)

# --- Encryption of stored secrets -----------------------------------------------------------
FLEET_ENCRYPTION_KEYS: list[str] = env.secret_list(
    "FLEET_ENCRYPTION_KEYS", required=PRODUCTION
) or [
    persistent_secret(
        STATE_DIR / "encryption_key", factory=lambda: Fernet.generate_key().decode("ascii")
    )
]
_key: str
for _position, _key in enumerate(FLEET_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"FLEET_ENCRYPTION_KEYS: key #{_position} is not a valid Fernet key "
            "(32 url-safe base64-encoded bytes); make one with: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None

# --- Accounts -------------------------------------------------------------------------------
AUTH_USER_MODEL = "core.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = env.integer("FLEET_SESSION_AGE_SECONDS", 14 * 24 * 3600, minimum=300)
SESSION_COOKIE_SAMESITE = "Lax"

AXES_FAILURE_LIMIT = env.integer("FLEET_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=100)
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("FLEET_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API takes JSON bodies only (a form or multipart body is a 415): one request shape
    # to document, validate and fuzz (tests/security/test_schemathesis.py).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SLM Fleet API",
    "DESCRIPTION": (
        "Control plane for Small Language Model fleets. Authenticate with a personal API token "
        "(`Authorization: Bearer <token>`). Mutating calls may carry a reason in the "
        "`X-Change-Reason` header; it lands on the history event."
    ),
    "VERSION": FLEET_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "core.choices.Role",
        "TokenScopeEnum": "core.choices.TokenScope",
        "SecretKindEnum": "core.choices.SecretKind",
        "ActorTypeEnum": "core.choices.ActorType",
        "JobKindEnum": "core.jobs.JobKind",
        "JobStateEnum": "core.jobs.JobState",
        "NodeModelStateEnum": "models_catalog.models.NodeModel.State",
        "StatusEnum": "fleet.choices.NodeState",
        "DeploymentStateEnum": "deployments.choices.DeploymentState",
        "DeploymentStatusEnum": "deployments.models.STATUSES",
        "ReplicaStateEnum": "deployments.choices.ReplicaState",
        "RolloutStateEnum": "deployments.choices.RolloutState",
        "RuntimeEnum": "deployments.choices.Runtime",
        "PlacementStrategyEnum": "deployments.choices.PlacementStrategy",
    },
}

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.string("FLEET_STATIC_ROOT", str(STATE_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.boolean("FLEET_STATIC_MANIFEST", PRODUCTION)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security -------------------------------------------------------------------------------
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.boolean("FLEET_SSL_REDIRECT", True)
    # Probes, and Prometheus scraping the web service by name inside the compose network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^api/v1/prometheus/"]
    SECURE_HSTS_SECONDS = env.integer("FLEET_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
if env.boolean("FLEET_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Product settings -----------------------------------------------------------------------
# How often a token's last-used time is written (seconds): avoids a write per request.
FLEET_TOKEN_LAST_USED_RESOLUTION = env.integer("FLEET_TOKEN_LAST_USED_RESOLUTION", 60, minimum=0)
# How long an Idempotency-Key's answer is kept for a retry (core/idempotency.py).
FLEET_IDEMPOTENCY_TTL_SECONDS = env.integer(
    "FLEET_IDEMPOTENCY_TTL_SECONDS", 86400, minimum=60, maximum=7 * 86400
)

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.choice("FLEET_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdLogFilter"}},
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},
    },
}
