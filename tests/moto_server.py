"""moto in server mode for tests (the launcher lives in the package: the demo uses it too)."""

from flowexport.sim.moto import free_port, moto_server, reset

__all__ = ["free_port", "moto_server", "reset"]
