"""The store: SQLAlchemy models, engine/session helpers and the upsert."""

from models.schema import Base, Dataset, DatasetVersion, SyncRun, SyncState

__all__ = ["Base", "Dataset", "DatasetVersion", "SyncRun", "SyncState"]
