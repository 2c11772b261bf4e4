"""The FlowExport API: models, CRD generation and spec validation."""
