"""Helpers shared by every stage: config loading, atomic writes, logging."""
