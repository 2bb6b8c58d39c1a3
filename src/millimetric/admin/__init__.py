"""Project, key and user management as services: the CLI and the admin API both call these."""
