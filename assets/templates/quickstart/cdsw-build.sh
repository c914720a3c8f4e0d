#!/bin/bash
# Runs once per build, in the build directory, before the model is served.
# Installed packages land in the build's own environment.
set -e
pip install --no-input -r requirements.txt
