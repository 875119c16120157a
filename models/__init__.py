"""The store: SQLAlchemy models (``models.schema``), engine/session helpers and the upsert.

Nothing is imported here, so ``models.diff`` (used by the CLI's output) loads without SQLAlchemy.
"""
