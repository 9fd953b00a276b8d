"""Step sizes along which a relu network stays on one linear piece, for the Taylor tests of the suite.

Imported by test modules as ``from relu_kinks import kink_free_step`` (pytest puts ``tests/`` on the
path, as it puts ``tests/cnn/`` for ``gradcheck``).
"""

import numpy as np


def kink_free_step(net, X, VW):
    """Largest h such that no relu pre-activation changes sign on [W - h VW, W + h VW] (halved)."""
    Xb = np.hstack([X, np.ones((len(X), 1))]) if net.bias else X
    Z, V = Xb @ net.W.T, Xb @ VW.T
    return 0.5 * float(np.min(np.abs(Z) / np.maximum(np.abs(V), 1e-300)))
