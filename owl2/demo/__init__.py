"""`owl2 demo`: the two-stage recipe on the toy preset and synthetic data, scored on held-out questions."""

from owl2.demo.run import DemoSettings, run_demo

__all__ = ["DemoSettings", "run_demo"]
