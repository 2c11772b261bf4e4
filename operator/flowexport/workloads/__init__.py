"""Unmanaged PCE workloads for a VPC's addresses: what should exist, the plan, the sync."""
