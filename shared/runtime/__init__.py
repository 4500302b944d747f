"""What the Function runs, and nothing else: wiring, the run, hits, delivery, and the service clients."""
