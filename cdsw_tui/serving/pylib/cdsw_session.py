"""Runs a project script that has IPython lines (``!cmd``, ``%magic``), as a CML
session runs it: ``python -m cdsw_session SCRIPT [ARGS]...``. IPython turns the file
into Python (its own transformer); the result runs as ``__main__`` with
``get_ipython()`` at hand, so an exception or ``sys.exit`` ends the run as in python."""

import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m cdsw_session SCRIPT [ARGS]...")
    from IPython.core.interactiveshell import InteractiveShell

    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    shell = InteractiveShell.instance(colors="NoColor")
    code = compile(shell.transform_cell(source), path, "exec")
    namespace = shell.user_ns
    namespace.update({"__name__": "__main__", "__file__": path})
    exec(code, namespace)


if __name__ == "__main__":
    main()
