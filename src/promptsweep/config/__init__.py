"""Configuration: every option defined once (flag, ini key, environment variable, default) and
the frozen settings they resolve to. Shared by the pytest plugin and the ``promptsweep``
command; nothing here imports pytest."""
