"""The ClickHouse event store: many nodes, each with a durable spool, over one ClickHouse."""
