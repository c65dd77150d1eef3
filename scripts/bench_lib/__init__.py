"""`scripts/bench`: importer against the raw Tesseract limit, OCRmyPDF, pdftotext and a naive
submitter, side by side on one generated corpus; writes BENCHMARKS.md."""
