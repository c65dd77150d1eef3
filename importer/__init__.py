"""importer: bulk PDF OCR import on the Gearman job server."""

__version__ = "0.1.0"
