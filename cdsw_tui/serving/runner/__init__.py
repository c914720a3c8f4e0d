"""The replica runner: serves one model function, one call at a time.

Standard library only, Python 3.9, so it runs inside any engine image or virtual
environment. It is run as a folder (``python .../serving/runner ARGS``, see ``__main__``);
an image holds it, with ``serving/frames.py`` and ``pylib/``, under
``/usr/local/lib/cdsw/cdsw_tui/`` (``resources.runner_files``).

    python runner --dir BUILD_DIR --file F --function FN --name REPLICA
                  (--socket PATH | --listen PORT --key-file K | --port N [--port-file P])
                  [--memory-mb N] [--kernel python3|r]

On its Unix socket (``--socket``), which only the gateway can reach, it speaks the frames
of ``serving/frames.py``. On a TCP port open to other hosts (``--listen``, for a runtime
whose replicas live elsewhere) it speaks the same frames after the key's challenge. On a
loopback TCP port (``--port``, a benchmark's direct baseline) it speaks plain HTTP/1.1
(``POST /call``, ``GET /health``). Either way a call carries the gateway's body
(``{"accessKey": ..., "request": ...}``) and is answered in SPEC's JSON with this
replica's name as ``ReplicaID``. Calls run one at a time, while a health probe answers
on its own connection at any moment, so a held connection cannot starve the
controller's probe.

Modules: ``output`` (stamped capture of fd 1 and 2), ``loaders`` (the Python and R
model), ``replica`` (a call and its answer), ``servers`` (the three listeners), ``main``
(arguments and start).
"""
