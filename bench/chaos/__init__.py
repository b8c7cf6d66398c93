"""Fault scenarios of issue #4 at the issue's scale, as real processes (``make chaos``).

Each scenario module has one ``run(make_stack, workdir, **sizes) -> figures`` that asserts its invariants
("nothing lost") and returns what it measured, plus its two sizes: ``SHORT`` (the CI test in
tests/resilience calls it with these) and ``LONG`` (``python -m bench.chaos`` uses these). The short
and long versions are the same code, on the same stack machinery (testkit/servers.py).
"""
