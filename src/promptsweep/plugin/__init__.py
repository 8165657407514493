"""The pytest glue: options, hookspecs, items, fixtures and the controller-side plugins."""
