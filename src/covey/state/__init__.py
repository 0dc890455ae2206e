"""Shared state: namespaces of JSON values with a version per key."""
