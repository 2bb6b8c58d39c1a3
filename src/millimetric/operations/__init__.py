"""Operator work on a whole installation: backups and health diagnosis (CLI commands)."""
