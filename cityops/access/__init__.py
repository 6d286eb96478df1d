"""People and access: users, roles, data scope, login sessions."""
