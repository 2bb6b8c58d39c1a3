"""The embedded event store: DuckDB in a process of its own, with an ingest journal.

`client.DuckDBEventStore` is the `EventStore` the rest of the server sees; `supervisor` runs the
store process (`child`), which alone opens the database (`database`, `reads`, `rollup`,
`migrations`, `journal`); `wire` and `rows` are what travels between them.
"""
