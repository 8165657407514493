"""Root conftest: the example evals/ suite runs on the plugin installed from src/."""
