"""The paper's experiments, all evaluated through one prequential function (evaluate.py)."""
