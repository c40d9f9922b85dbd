"""Serving: SavedModel export with in-graph retrieval."""

from keras_ragkd.serving.export import export_model

__all__ = ["export_model"]
