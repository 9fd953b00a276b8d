"""Shared set-up of the CNN tests: one BLAS thread.

The CNN's products are small (a few thousand rows by 16 to 64 columns). On the shared 2-core test
machine, where other test runs compete for the cores, OpenBLAS's second thread spin-waits for a
core and a training step runs 10x slower; with one thread the timings are stable. Results do not
depend on the thread count beyond rounding, and no test compares runs made with different counts.
The limit is set per test module of this directory and lifted after it: other tests keep theirs.
"""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
