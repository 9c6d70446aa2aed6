"""Access tracking, hot/cold classification and background recompression (not built yet)."""
