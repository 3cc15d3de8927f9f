from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(fixtures) -> Path:
    return fixtures / "models"
