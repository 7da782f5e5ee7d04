"""The model store: every model's versions, their artifacts and signatures, aliases and
traffic policies. Everything else stands on it; it imports none of predq's other parts but
the database, errors and configuration.

- ``registry.py``: the ``Registry`` every process holds (in ``Services``): resolving a
  request to a version (cached briefly), loading a version's estimator after its sha256
  check, reading what a version is; writing is delegated to the modules below.
- ``registration.py``: registering a version (the artifact checked and stored, its
  formats: joblib and skops); ``aliases.py``: moving aliases and their audit trail;
  ``versions.py``: the rules for names and ``ServedVersion``, what serves a request.
- ``signature.py``: a version's signature (features, dtypes, classes) and checking rows
  against it; ``explainability.py``: which models are explained exactly, by which route,
  and whether a stored signature may be; ``traffic.py``: traffic policies (weights,
  sticky routing, a shadow).

The operations that run against the store (training, drift, feedback) are app/lifecycle/.
"""
