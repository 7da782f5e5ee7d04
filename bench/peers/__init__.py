"""Systems predq is measured against that are not predq (run in their own virtualenvs)."""
