"""The MCP server: `POST /mcp` (project keys) and `POST /mcp/account` (account keys).

Tools answer through the read API's own query layer (`millimetric.query`) and `track_event` through
the ingest pipeline, so an agent sees exactly the numbers the REST endpoints give.
"""
