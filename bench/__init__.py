"""bench: a reproducibility benchmark suite for local learning (BP, DFA, SVD-BP, SSA)."""

from bench.method import Method, Option, discover, get_method

__all__ = ["Method", "Option", "discover", "get_method"]
