"""The surfaces people touch (CLI, Slack app, link pages) and the wiring that builds services from settings."""
