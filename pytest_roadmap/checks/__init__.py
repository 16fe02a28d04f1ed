"""Checks: what a good answer is."""
