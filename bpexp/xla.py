"""XLA settings shared by the library: compile options for functions that run once per shape.

Imports nothing from bpexp, so any module may use it.
"""

# For functions that run once per shape (gradient checks, one-off measurements): compile time
# dominates their cost, so skip XLA's backend optimization passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
