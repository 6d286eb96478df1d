"""Shared plumbing: settings, database, audit, security helpers."""
