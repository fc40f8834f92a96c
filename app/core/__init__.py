"""Shared building blocks: settings, database, errors, pagination, keys and scope, clock."""
