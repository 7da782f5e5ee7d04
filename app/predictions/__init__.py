"""The online path: a prediction request from submit to answer. Follow one in three places:
app/api/predictions.py (decode the body) → this package → workers/batching.py (the batch).

In this package, in the order a prediction meets them:

- ``submit.py`` routes a request (the model's traffic policy picks a version unless the
  request names one) and validates its rows against the version's signature, then takes
  one of two roads:

  - **stored** (``stored.py``): answers cached rows from Redis, refuses work when the
    version's queue is too deep (backpressure), commits the job row to the database (the
    source of truth: a 202 means it is stored), then queues the remaining rows.
  - **deferred** (``deferred.py``), for a submit that waits (``?wait=S``) with none of
    its rows cached: one Redis call queues its rows, and the worker inserts the job row,
    outputs and all, in one statement for its whole batch. Before the client hears of the
    job either the worker has stored it (the answer is the finished job) or, when S
    passes first, the API stores it as queued (the 202). So every job a client is told
    of is in the database, and the common case costs no database round trip in the API.

  What both roads share is ``submission.py`` (the routed request, the job row);
  Idempotency-Keys are ``idempotency.py``.
- ``queue.py`` is the row queue: a Redis list per model version, the Lua scripts that
  push, pop and publish (``lua/``, beside it), and ``wake_worker``, the one place a batch
  task is sent. What travels through Redis (a queue item, a finished job's view) is
  encoded in ``items.py`` and nowhere else.
- A worker pops items, runs the model once for the batch, stores the results and hands
  each finished job's view to its pollers (workers/batching.py).
- ``jobs.py`` reads a job back: from Redis, else the database; a long-poll waits on the
  job's done list. ``view.py`` is a job's status and its public view, which the API and
  the workers both build.

What runs the model (app/scoring/) and what a version is (app/registry/) sit below this
package; the routes (app/api/) and the workers (workers/) above it.
"""
