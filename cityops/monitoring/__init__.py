"""monitoring bounded context."""
