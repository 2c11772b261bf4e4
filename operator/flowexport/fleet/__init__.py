"""FlowExportSet: discovery across accounts and what the set wants (see docs/fleet.md)."""
