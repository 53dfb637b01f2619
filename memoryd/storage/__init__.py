"""Storage: the asyncpg pool, SQL migrations and one repository per table group.

The only package that writes SQL. Every query on user data is scoped by ``user_id``.
"""
