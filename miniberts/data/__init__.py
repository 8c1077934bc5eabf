"""Data: built-in corpora, pre-training shards, task files."""
