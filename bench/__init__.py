"""statebus's benchmark suite, run with `python -m bench` (see docs/benchmarks.md).

statebus and the naive relay (bench/naive.py) run side by side against one embedded
PostgreSQL, under the same load, in the same run. statebus is driven only through its
public surface: `statebus migrate` and `statebus serve` in subprocesses, SQL writes to
the contract's tables, and the `/v1/ws` socket protocol.
"""
