"""The extra suites share the main suite's session fixtures (its private Redis, the demo world)
and its rule that a test using a world is marked slow."""

from tests.conftest import (  # noqa: F401  # fixtures and the hook, registered by import
    demo,
    pytest_collection_modifyitems,
    redis_server,
)
