"""What a run leaves behind: the run directory, summaries, comparisons, the leaderboard and HTML."""
