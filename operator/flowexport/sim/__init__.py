"""Stand-ins for external systems, speaking their real protocols over loopback HTTP.

Product code never imports this package; only the CLI's simulator/demo commands and tests do.
"""
