"""The LLM transport: the OpenAI-compatible client, the endpoint and the layers that wrap
its send path (response cache, retries, tracing). Nothing here imports pytest."""
