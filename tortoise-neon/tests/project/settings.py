"""The library project's settings: its one model module."""

MODELS = ["members"]
