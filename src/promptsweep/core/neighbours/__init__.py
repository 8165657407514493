"""The nearest train samples: one ranking for few-shot examples, the lookup floor, the gate and choices."""
