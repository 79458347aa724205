from gateway_harness import gw, make_harness

__all__ = ["gw", "make_harness"]
