"""Prompt templates and the bounded Jinja sandbox that renders them."""
