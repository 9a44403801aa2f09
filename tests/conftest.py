import jax

# Gradient checks need float64; silent broadcasting must fail loudly.
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_terminal_summary(terminalreporter):
    """tests/test_faults.py's matrix: how many cases of each kind passed (from the reports'
    ``fault_matrix`` properties, which reach this process from xdist's workers too)."""
    counts: dict = {}
    for rep in terminalreporter.stats.get("passed", []):
        for key, value in getattr(rep, "user_properties", []):
            if key == "fault_matrix":
                kind, n = value
                counts[kind] = counts.get(kind, 0) + n
    if counts:
        terminalreporter.write_line("fault matrix: " + ", ".join(
            f"{n} {k}" for k, n in sorted(counts.items())) + ", each ending in one line, a "
            "repaired run or a right number")
