"""Running a model: what the workers (and the cards) call once a version is loaded.

- ``inference.py``: one call for a batch, its outputs shaped as the contract's (and a
  forest's trees asked directly, bit for bit what scikit-learn answers);
- ``explain.py``: each row's explanation with shap, built once per process and version.

Loading a version (its sha256 checked) is the registry's (app/registry/registry.py).
"""
