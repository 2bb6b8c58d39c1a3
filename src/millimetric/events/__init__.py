"""The event model and the query vocabulary, defined once for every layer and every backend."""
