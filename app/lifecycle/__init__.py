"""A model's life after it is trained elsewhere: the registry (versions, aliases, artifacts),
traffic policies, drift checks, feedback and live quality, retraining and its gate.

The API uses it (resolving versions, promoting, feedback) and so do the workers
(retraining and drift checks run as tasks).
"""
