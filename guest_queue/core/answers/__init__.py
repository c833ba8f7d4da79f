"""Answers reused across requests: the answer cache and single flight."""
