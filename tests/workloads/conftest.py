"""Workload tests run against moto (server mode) and the PCE simulator."""

from tests.cloud import Cloud, cloud
from tests.pcesim import SimPCE, client, pce

__all__ = ["Cloud", "SimPCE", "client", "cloud", "pce"]
