"""The read side: request parameters -> validated plans -> one store statement -> JSON answers."""
