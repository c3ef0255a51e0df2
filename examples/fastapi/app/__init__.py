"""Notes over REST and a live feed over a WebSocket."""
