"""Reliability under load and faults (issue 9): scenarios that drive the real agent on a lab of its
own and check every answer. `hack/reliability` runs the long versions; tests/test_reliability.py
the short ones in CI."""
