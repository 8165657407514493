"""What a model says and how it is read: requests and results, parsing, metrics, the judge."""
