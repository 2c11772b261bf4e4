"""The PCE edge: an httpx client for the Illumio REST API (uploads, probe, workloads, labels)."""
