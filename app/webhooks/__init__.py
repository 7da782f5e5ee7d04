"""Completion webhooks: events announced to URLs, at least once, from an outbox table.

- ``events.py`` names the events.
- ``urls.py`` checks a callback URL: at submit (http(s), length, no credentials, no literal
  private address) and at send time (the name's resolved addresses; the SSRF guard).
- ``outbox.py`` writes deliveries, each in the transaction that stores what it announces
  (a job's result: workers/batch_store.py; a finished batch job, a promotion, a drift
  report), once per event, subject and URL.
- ``signing.py`` makes secrets (``whsec_...``) and Standard Webhooks signatures
  (the ``standardwebhooks`` package), and finds the secret that signs a delivery.
- ``endpoints.py`` is the API's side: endpoints per API key, the key's signing secret,
  deliveries listed and sent again, a job's delivery state.

The sender (workers/webhook_sender.py, Celery queue ``webhooks``) takes due rows, sends
them, and schedules retries in the outbox itself (``next_attempt_at``), never as Celery
countdowns.
"""
