"""Runs a project script as a CML session runs it: ``python -m cdsw_session [--app]
SCRIPT [ARGS]...``. A script with IPython lines (``!cmd``, ``%magic``) is turned into
Python by IPython's own transformer and runs with ``get_ipython()`` at hand; an exception
or ``sys.exit`` ends the run as in python.

``--app`` (applications) runs the script as CML's engine runs an application's: as
``__main__`` with no ``__file__``, in /home/cdsw. Flask's ``Flask(__name__)`` then finds
its templates and static files from the project's folder, as the AMPs' apps expect
(``template_folder="apps/templates"``, ``send_from_directory("app", ...)``)."""

import os
import sys
import types


def main() -> None:
    args = sys.argv[1:]
    app = bool(args) and args[0] == "--app"
    args = args[1:] if app else args
    if not args:
        sys.exit("usage: python -m cdsw_session [--app] SCRIPT [ARGS]...")
    path = args[0]
    sys.argv = args
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    module = types.ModuleType("__main__")
    if not app:
        module.__file__ = path
    ipython = any(line.lstrip().startswith(("!", "%")) for line in source.splitlines())
    if ipython:
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance(colors="NoColor", user_module=module)
        source = shell.transform_cell(source)
    # the script's own module is __main__: Flask(__name__) looks there for its root, and
    # pickle for the classes the script defines
    sys.modules["__main__"] = module
    if app:
        sys.path[0] = os.getcwd()
    exec(compile(source, path, "exec"), module.__dict__)


if __name__ == "__main__":
    main()
