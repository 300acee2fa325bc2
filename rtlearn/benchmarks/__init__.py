"""Benchmarks (`rtlearn bench`): the learning step (step.py), the daemon's per-packet work and
the daemon over its sockets (serve.py), the long run under hostile input (soak.py). They sit
above the service and import it; nothing below imports them."""
