"""Benchmarks: round trips on the wire (roundtrips.py) and the tools they share."""
