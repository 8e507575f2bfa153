"""The SQLite store: connections, migrations and the tables' row helpers."""

from pipeline.store.db import Store

__all__ = ["Store"]
