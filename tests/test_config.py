"""Settings: read from the environment, with paths derived from VAR_DIR."""

from __future__ import annotations

import pytest

from app.config import Settings


def test_paths_follow_var_dir_unless_given():
    settings = Settings.from_env({"VAR_DIR": "/srv/predq", "MAX_BATCH_ROWS": "64"})
    assert settings.database_url == "sqlite:////srv/predq/predq.sqlite3"
    assert settings.artifact_root == "/srv/predq/artifacts"
    assert settings.max_batch_rows == 64

    moved = settings.replace(var_dir="/data")
    assert moved.database_url == "sqlite:////data/predq.sqlite3"
    assert moved.artifact_root == "/data/artifacts"

    explicit = Settings(database_url="postgresql+psycopg://db/predq").replace(var_dir="/data")
    assert explicit.database_url == "postgresql+psycopg://db/predq"


def test_a_malformed_number_names_the_variable():
    with pytest.raises(ValueError, match="MAX_BATCH_DELAY"):
        Settings.from_env({"MAX_BATCH_DELAY": "soon"})


def test_booleans_accept_the_usual_spellings_and_reject_others():
    assert Settings.from_env({"AUTH_ENABLED": "false"}).auth_enabled is False
    assert Settings.from_env({"AUTH_ENABLED": "On"}).auth_enabled is True
    assert Settings.from_env({}).auth_enabled is True
    with pytest.raises(ValueError, match="AUTH_ENABLED"):
        Settings.from_env({"AUTH_ENABLED": "maybe"})
