"""A service that starts, says so, and never listens."""
import time

print("starting up, loading the model...", flush=True)
time.sleep(600)
