"""The eval core: suites, datasets, templates, parsing, metrics, scoring, aggregation,
statistics and the gate. Pure Python: nothing here imports pytest or an HTTP client."""
