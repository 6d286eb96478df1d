"""Public service (便民服务) and citizen reporting (随手拍): no login, rate-limited."""
