"""The ``promptsweep`` command line."""
