"""bench: a reproducibility benchmark suite for local learning (BP, DFA, SVD-BP, SSA)."""

from bench.method import Method, discover, get_method
from bench.option import Option

__all__ = ["Method", "Option", "discover", "get_method"]
