"""The control plane's HTTP API (FastAPI): thin routers over :mod:`nexus_control.plane`."""
