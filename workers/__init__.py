"""Celery workers: batches of queued rows, batch-job chunks, the sweeper, beat's tasks.

Importing any module here has no side effects: no app is built and no directory is
touched. The entry point, which builds the app, is ``workers.main``
(``celery -A workers.main worker``), and nothing imports it.
"""
