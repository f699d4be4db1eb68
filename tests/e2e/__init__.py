"""Whole deployments: served processes, the CLI, browsers, fault injection, soak and bench."""
