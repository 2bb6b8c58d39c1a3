"""Which key kinds may use which capability (SPEC sections 1-2)."""

INGEST = frozenset({"pk", "sk"})
READ = frozenset({"rk", "sk", "ak"})
FORGET = frozenset({"sk"})
