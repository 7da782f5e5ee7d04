"""What runs against the model store (app/registry/) over a model's life: retraining and its
gate, the data it trains and is judged on, drift checks, feedback and live quality, A/B
and shadow comparisons, and model cards.

- ``training.py`` (a run, its gate and the per-model lock), ``training_data.py``
  (imports, their quarantine and acceptance, evaluation sets, the training window),
  ``label_check.py`` (the serving version's verdict on an import's labels),
  ``training_runs.py`` (runs as rows:
  queued, claimed, finished, schedules), ``evaluation.py`` (the paired tests the gate uses);
- ``drift.py`` (reference sample against recent inputs); ``feedback.py`` (true labels,
  live quality, the A/B report); ``shadows.py`` (a shadow version beside the served one);
- ``cards.py`` (a version's model card and its importance chart); ``compiling.py`` (a version
  compiled to ONNX, its gate run and its outcome recorded).

The API calls these from its routes and the CLI from its commands; the workers run
retraining and drift checks as tasks (workers/tasks.py).
"""
