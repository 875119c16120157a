"""The store: SQLAlchemy models, engine/session helpers and the upsert."""

from models.monitoring import ApiKey, NotifiedState, SchedulerHeartbeat
from models.schema import Base, Dataset, DatasetVersion, SyncRun, SyncState

__all__ = ["ApiKey", "Base", "Dataset", "DatasetVersion", "NotifiedState", "SchedulerHeartbeat", "SyncRun", "SyncState"]
