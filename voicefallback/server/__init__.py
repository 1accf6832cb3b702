"""`voicefallback serve`: the old service's HTTP API and a status page (the `serve` extra)."""
