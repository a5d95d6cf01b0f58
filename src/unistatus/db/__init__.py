"""Database layer: engines, table definitions, dialect differences, migrations."""
