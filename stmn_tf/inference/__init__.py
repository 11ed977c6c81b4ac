"""Video inference: the test-time window schedule, the detector ensemble."""
