"""The online side: a FastAPI predictor over the same Feast definitions."""
