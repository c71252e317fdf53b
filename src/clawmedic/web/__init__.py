"""See it: the daemon's small HTTP server — a status page at `/`, incident pages, `/api/status` and Prometheus
`/metrics` (`[daemon.http]`).

This package `__init__` stays light (the config imports `address`); the server itself is `clawmedic.web.server`,
loaded only by `clawmedic run`.
"""
