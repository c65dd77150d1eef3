"""The processing side: the Gearman worker loop, its supervisor and the OCR engine."""
