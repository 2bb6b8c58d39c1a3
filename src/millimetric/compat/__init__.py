"""Other vendors' ingest APIs (Segment's HTTP Tracking API, PostHog's capture API), mapped onto
the one ingest pipeline: their tracking libraries work against this server with only the host
changed."""
