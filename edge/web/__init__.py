"""The web side of the gate: an HTTP server that observes the gate's LiveState, and its pages.

Placed after gate/ in the import order: it reads what the gate publishes, and the gate never
imports it. aiohttp and prometheus_client are imported only when the server starts.
"""
