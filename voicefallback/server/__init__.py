"""`voicefallback serve`: the HTTP API and a status page (the `serve` extra)."""
