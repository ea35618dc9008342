"""Shared test configuration: hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (default) keeps the suite fast on a 2-core machine;
``HYPOTHESIS_PROFILE=thorough`` runs many more examples for a release check.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _key_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs keep signing keys, sampling secrets and anchors in a key directory outside their
    run directory; the tests use a fresh one instead of the user's config directory."""
    os.environ.setdefault("SECUREFL_KEY_DIR", str(tmp_path_factory.mktemp("securefl-keys")))
