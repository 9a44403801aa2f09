"""XLA settings shared by the library: compile options for functions that run once per shape.

Imports nothing from bpexp, so any module may use it.
"""

# For functions that run once per shape (gradient checks, one-off measurements): compile time
# dominates their cost, so skip XLA's backend optimization passes.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def use_compile_cache(path: str) -> None:
    """JAX's persistent compilation cache in ``path`` for every compile of this process, however
    short: a rerun, a resumed run, another shard or another process loads the executable
    instead of compiling it. Call before the first compile."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
