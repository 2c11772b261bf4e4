"""flowexport: AWS VPC flow logs to Illumio PCE traffic flows, as a Kubernetes operator."""

__version__ = "0.1.0"
