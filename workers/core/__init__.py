"""Shared plumbing of the worker processes: config from the environment, JSON logs, health and metrics."""
