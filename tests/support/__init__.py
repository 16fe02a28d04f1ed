"""What the tests share: the sandbox and project under test, Redis servers, store helpers.

Imported one way only, as `tests.support.<module>`, so each module (and the servers it
starts) exists once per test process.
"""
