"""Dagster drill domain: the weekly whole-platform recovery drill, its job and schedule."""
