"""Tests of the weight exporter, model_export/styleserve_export."""
