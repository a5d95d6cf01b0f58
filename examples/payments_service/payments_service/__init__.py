"""A small payments service that adopts unistatus (see ../README.md)."""
