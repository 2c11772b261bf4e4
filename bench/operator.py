"""`python bench/operator.py [...]`: the operator at N FlowExports (see `operator_scale.py`).

This file shares its name with the standard library's `operator`. Whenever `bench/` is on
`sys.path` (running any script here puts it first), the standard library's own imports of
`operator` find this file: imported under that name, it loads the real module in its place,
so neither this script nor `bench/core.py` shadows it.
"""

import sys

if __name__ == "__main__":
    from operator_scale import main

    main()
else:
    # Only the import system's frozen parts and `os` (loaded at start-up) are used: the real
    # `operator` is what the rest of the standard library needs first.
    import importlib.machinery
    import os

    _spec = importlib.machinery.PathFinder.find_spec("operator", [os.path.dirname(os.__file__)])
    if _spec is None or _spec.loader is None:
        raise ImportError("the standard library's operator module was not found")
    _real = type(sys)("operator")
    _real.__spec__, _real.__file__ = _spec, _spec.origin
    _spec.loader.exec_module(_real)
    sys.modules["operator"] = _real  # what `import operator` returns from here on
