"""`owl2 demo`: the two-stage recipe on the toy preset and synthetic data, scored on held-out questions."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "DemoSettings": "owl2.demo.run",
    "run_demo": "owl2.demo.run",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
