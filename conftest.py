"""The repository's root conftest: the test suite drives pytest sessions with pytester."""

pytest_plugins = ["pytester"]
