"""The HTTP and websocket face of the service: its ASGI app, edge, GraphQL view and probes."""
