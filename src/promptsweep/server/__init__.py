"""The llama-server: provisioning the binary and the default model, and the managed process."""
