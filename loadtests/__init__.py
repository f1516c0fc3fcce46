"""Load tests of the service with locust; ``python -m loadtests.run`` (see run.py)."""
