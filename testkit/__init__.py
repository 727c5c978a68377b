"""Helpers for the tests, the benchmarks and the scripts of a source checkout; not shipped in the wheel
(pyproject.toml lists the installed packages). Import them from the repository root (pytest puts it on the
path; benchmarks/ and scripts/ add it).

- `testkit.nodes`: in-process nodes on loopback ports, waiting on conditions.
- `testkit.jobs`: deterministic client operands for job tests.
- `testkit.crashtest`: the SIGKILL crash-safety harness (tests/test_chain_storage.py, scripts/soak_dbcrash.py).

Synthetic chains (`ChainBuilder`) live in the shipped chain/synthetic.py: `pouw bench import` mines them.
"""
