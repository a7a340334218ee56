"""What this process serves, for the few settings that depend on it.

``config.asgi`` sets :data:`ASGI_WEB` before Django loads its settings. Every other process
(Celery workers and beat, ``manage.py`` commands, the agent, the gateway's own process, the
test suite) leaves it False.
"""

ASGI_WEB = False
