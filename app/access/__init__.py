"""Who may call predq and how often: API keys and scopes, who may read a job
(``auth.py``), and per-key rate limits counted in Redis (``ratelimit.py``). Both run as
hooks before every ``/v1`` request (app/__init__.py installs them).
"""
