"""Channels test configuration: `support` (the validating provider mock) is importable from here."""
