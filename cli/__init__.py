"""The nsinspect command line (also the `kubectl nsinspect` plugin)."""
