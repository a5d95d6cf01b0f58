"""The HTTP service (FastAPI) and who may call it."""
