"""flood bounded context."""
