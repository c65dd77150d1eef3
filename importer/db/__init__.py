"""The database: the source of truth for batches, documents, pages and e-mail."""

from importer.db.engine import Database, open_database
from importer.db.models import Batch, Document, Outbox, Page, RejectedJob

__all__ = ["Batch", "Database", "Document", "Outbox", "Page", "RejectedJob", "open_database"]
