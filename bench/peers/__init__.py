"""BASELINES, NOT PART OF THE SERVICE: what a user would run instead, serving the same weights, for
`python -m bench.serving` to compare against (a tutorial FastAPI app; TorchServe)."""
