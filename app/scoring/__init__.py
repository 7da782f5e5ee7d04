"""Running a model: what the workers (and the cards) call once a version is loaded.

- ``inference.py``: one call for a batch, its outputs shaped as the contract's (and a
  forest's trees asked directly, bit for bit what scikit-learn answers);
- ``compiled.py``: the compiled backend (ONNX, onnxruntime) of a version an admin compiled,
  its parity gate and crossover batch size;
- ``explain.py``: each row's explanation with shap, built once per process and version;
- ``explainers.py``: the shap explainer for each model family (app/registry/explainability.py
  says which models have one, and which output it adds up to).

Loading a version (its sha256 checked) is the registry's (app/registry/registry.py).
"""
