"""Predict an iris species from petal measurements.

The trained parameters (class centroids and a temperature fitted on the iris data
set) are in iris_params.json; the code only loads them once, at import.

Example input:  {"petal_length": 4.7, "petal_width": 1.4}
Example output: {"species": "versicolor", "probability": 0.97}
"""

import json
from pathlib import Path

import numpy as np

_PARAMS = json.loads((Path(__file__).parent / "iris_params.json").read_text())
_SPECIES = _PARAMS["species"]
_CENTROIDS = np.array(_PARAMS["centroids"], dtype=float)
_SCALE = np.array(_PARAMS["scale"], dtype=float)
_TEMPERATURE = float(_PARAMS["temperature"])


def predict(args):
    x = np.array([float(args["petal_length"]), float(args["petal_width"])]) / _SCALE
    distances = ((_CENTROIDS / _SCALE - x) ** 2).sum(axis=1)
    scores = -distances / _TEMPERATURE
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    best = int(probabilities.argmax())
    return {"species": _SPECIES[best], "probability": round(float(probabilities[best]), 2)}
