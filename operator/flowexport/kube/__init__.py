"""The operator: kopf handlers, per-FlowExport workers, status and Secrets (the only kopf user)."""
