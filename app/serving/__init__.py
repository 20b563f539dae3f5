"""The serving runtime: version resolution, loaded-model cache, inference threads, batchers, readiness.

`ModelServer` (server.py) composes them and owns the request pipeline every prediction route uses.
"""
