"""Importing this package registers every connector (one module per provider)."""
