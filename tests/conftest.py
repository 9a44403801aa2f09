import jax

# Gradient checks need float64; silent broadcasting must fail loudly.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
