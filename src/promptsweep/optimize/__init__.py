"""The prompt optimizer: search spaces, candidates and search strategies."""
