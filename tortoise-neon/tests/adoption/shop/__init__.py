"""The shop: its models and its web app."""
