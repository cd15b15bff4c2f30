"""How good and how fast: `eval` (evaluate.py, metrics.py), `bench` (bench.py), `preview`
(preview.py, labels.py) and their plots (plots.py)."""
