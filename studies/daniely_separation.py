"""Daniely's sin(pi d^3 <x, y>): its harmonic energy sits at degree ~ omega, so every depth-2 net needs a huge weight norm; depth 3 does it with poly(d) neurons.

Claim (Daniely 2017, "Depth separation for neural networks", COLT, arXiv:1702.08489): on pairs
(x, y) uniform on S^{d-1} x S^{d-1}, f(x, y) = g(<x, y>) with g(t) = sin(omega t), omega = pi d^3,
is approximated to uniform accuracy eps by a depth-3 relu network of size poly(d, 1/eps), but a
depth-2 network (one hidden layer) with weights bounded by 2^{o(d log d)} needs 2^{Omega(d log d)}
neurons to approximate it, because g is far from every polynomial of low degree.

What is computed, exactly (closed forms, no sampling), for d = 2 .. 10:

* the Funk-Hecke coefficients mu_k of g (:func:`shallow.depth.daniely_funk_hecke`,
  mu_k = +-Gamma(d/2) (2/omega)^{d/2-1} J_{k+d/2-1}(omega) for odd k) and the energy per degree
  N(d, k) mu_k^2, whose sum is ||f||^2 = (1 - Gamma(d/2) omega^{1-d/2} J_{d/2-1}(2 omega)) / 2
  (:func:`shallow.depth.daniely_energy`; the study reports the gap between the two);
* ``below``: the fraction of ||f||^2 at degrees < K, the squared L2 error (relative) of the best
  approximation of f by functions sum_{k<K} (degree-k harmonics in x) x (degree-k harmonics in y),
  the low-degree part of f, and the quantiles K_p / omega (the first K with a fraction p below it);
* ``M = (sum_k mu_k^2)^{1/2}``: the largest correlation <f, h> over functions h(x, y) =
  psi(<v, x>, <v', y>) of unit L2 norm (any v, v' in S^{d-1}, any psi). Proof (the argument of
  Daniely's lower bound, written in this library's normalisation): E[P_k(<x, y>) | <v, x> = s,
  <v', y> = s'] = P_k(s) P_k(s') P_k(<v, v'>) (the Gegenbauer product formula, twice), and the
  e_k = N(d, k) P_k(s) P_k(s') are orthonormal, so <f, h> = sum_k mu_k P_k(<v, v'>) <psi, e_k>
  <= M ||h||, with equality for v = v' and psi proportional to sum_k mu_k e_k. Every neuron
  sigma(<w, x> + <w', y> + b) is such an h; the constant is orthogonal to f (mu_0 = 0). Hence
  (Cauchy-Schwarz) every depth-2 net f_hat = c + sum_i a_i sigma_i satisfies
  ||f - f_hat|| / ||f|| >= 1 - M S / ||f||^2 with S = sum_i |a_i| ||sigma_i||: a relative error of
  1/2 or less needs S >= ``S_min`` = ||f||^2 / (2 M). That is the proven part, evaluated exactly;
  M <= (E_{<K} + ||f||^2 / N(d, K))^{1/2} for every K (``low_degree_bound``, minimised over K) is
  how the concentration of the energy at high degree makes M small.

What is measured on sampled pairs (n per d, drawn from ``seed``):

* the depth-3 construction :func:`shallow.depth.daniely_network` at uniform error ``tolerance``:
  its neurons, its proven bound and its largest error on the pairs (d = 2 .. 10: its rank-one W_2 is
  stored by its two factors, 4.3 MB in all at d = 10, where a dense one took 2.5 GB);
* the correlation of f with the maximising h above (v = v' = e_1), by Monte Carlo, against M (a
  check of the proof's equality case, resolvable where M exceeds a few standard errors: d = 2, 3).

What is not done: no depth-2 network is trained (the bound holds for all of them, whatever their
training), and the theorem's own constants (Daniely's weight bound and activation class) are not
reproduced: S bounds sum |a_i| ||sigma_i||, which for a relu neuron with |w|, |w'|, |b| <= B is at
most 3B |a_i|, so width times max |a_i| times B must reach S_min / 3.

Measured with the defaults: below degree omega/2 lies 29% of the energy at d = 2, 1.2% at d = 6 and
0.1% at d = 10; half of it lies below 0.80 omega (d = 2) to 0.97 omega (d = 10), 99.9% below 1.19
omega (d = 2) to 1.005 omega (d = 10). M falls from 0.48 (d = 2) to 8.6e-6 (d = 6) and 2.0e-12
(d = 10), so S_min grows from 0.48 to 2.9e4 and 1.3e11, faster than any power of d (log S_min / (d
log d) rises from 0.39 at d = 3 to 1.11 at d = 10). The depth-3 networks have 298, 992, 2341, 4578,
7884, 12520, 18682, 26624, 36491 neurons for d = 2 .. 10 (about d^3 / sqrt(tol): fitted slope 2.99)
and err by at most 0.027-0.032 on the 20000 pairs (bound 0.05). The Monte Carlo <f, h*> is 0.480 +-
0.004 against M = 0.480 (d = 2) and 0.057 +- 0.005 against 0.069 (d = 3); beyond, M is below its standard error.

Runtime: 22 s with the defaults on the 2-core development machine under load (20 s of compute: the
depth-3 networks and the Monte Carlo correlations on 20000 pairs, 4 s at d = 10; the closed forms up to
d = 10 take 0.1 s), 1.2 s of compute with --quick (5 s with the import and the figure).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_positive
from shallow.backend import to_device, to_numpy
from shallow.depth import daniely_energy, daniely_funk_hecke, daniely_function, daniely_network, sample_daniely
from shallow.harmonics import legendre_all, num_harmonics

QUANTILES = (0.1, 0.5, 0.9, 0.999)


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (2, 3, 4, 5, 6, 7, 8, 9, 10)  # closed forms: cheap in any d
    network_dims: tuple = (2, 3, 4, 5, 6, 7, 8, 9, 10)  # depth-3 networks (4.3 MB and 2 s at d = 10)
    tolerance: float = 0.05  # uniform error bound of the depth-3 networks
    n: int = 20000  # sampled pairs per d (depth-3 error, Monte Carlo correlation)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of after the spectra or inside a network."""
        study.check_grid(self.dims, "dims", check_dimension, increasing=True)
        study.check_grid(self.network_dims, "network_dims", check_dimension, increasing=True)
        check_positive(self.tolerance, "tolerance")
        check_integer(self.n, "n", minimum=2)  # a standard error needs two samples


QUICK = {"network_dims": (2, 3, 4), "n": 4000}


def degree_cap(omega) -> int:
    """A degree past which N(d, k) mu_k^2 is negligible: J_{k+nu}(omega) decays like exp(-c (k - omega)^{3/2}
    / omega^{1/2}) beyond k = omega, below 1e-30 of its peak from omega + 40 omega^{1/3} on."""
    return int(math.ceil(omega + 40 * omega ** (1 / 3) + 60))


def spectrum(d) -> dict:
    """Closed-form quantities of sin(pi d^3 <x, y>) on S^{d-1} x S^{d-1}."""
    omega = math.pi * d**3
    kmax = degree_cap(omega)
    mu = daniely_funk_hecke(d, kmax)  # (kmax + 1,)
    N = np.array([float(num_harmonics(d, k)) for k in range(kmax + 1)])  # (kmax + 1,)
    energy = N * mu**2  # per degree
    total = daniely_energy(d)
    below = np.concatenate([[0.0], np.cumsum(energy)]) / total  # (kmax + 2,) below[K]: degrees < K
    M = float(np.sqrt(np.sum(mu**2)))
    low = float(np.sqrt(np.min(below[:-1] * total + total / N)))  # min over K of (E_{<K} + ||f||^2 / N(d, K))^{1/2}
    out = {"omega": omega, "mu": mu, "energy": energy, "below": below, "total": total,
           "parseval_gap": float(abs(energy.sum() - total) / total), "M": M, "max_mu": float(np.abs(mu).max()),
           "low_degree_bound": low, "S_min": total / (2 * M)}
    for p in QUANTILES:
        out[f"K{p:g}"] = int(np.searchsorted(below, p))  # the first K with a fraction >= p below it
    return out


def attained_correlation(Z, f, d, mu, M, chunk=2000):
    """Monte Carlo mean and standard error of f h over the rows of Z (f: daniely_function(Z) on the host),
    h = sum_k mu_k N(d, k) P_k(x_1) P_k(y_1) / M (v = v' = e_1): the function of (<v, x>, <v', y>) of unit norm
    most correlated with f, <f, h> = M."""
    kmax = mu.size - 1
    N = np.array([float(num_harmonics(d, k)) for k in range(kmax + 1)])
    h = np.empty(Z.shape[0])
    for start in range(0, Z.shape[0], chunk):
        s, s2 = Z[start:start + chunk, 0], Z[start:start + chunk, d]
        Ps, Ps2 = legendre_all(kmax, d, s), legendre_all(kmax, d, s2)  # (kmax + 1, chunk) each
        h[start:start + chunk] = ((mu * N)[:, None] * Ps * Ps2).sum(axis=0) / M
    prod = f * h
    return float(prod.mean()), float(prod.std(ddof=1) / math.sqrt(prod.size)), float(np.sqrt(np.mean(h * h)))


def compute(cfg: Config) -> dict:
    from tqdm.auto import tqdm

    result = {"dims": np.asarray(cfg.dims, dtype=np.int64), "network_dims": np.asarray(cfg.network_dims, np.int64)}
    rows = {}
    for d in tqdm(cfg.dims, desc="daniely_separation: spectra", unit="d", disable=not study.show_progress()):
        s = spectrum(d)
        rows[d] = s
        for key in ("mu", "energy", "below"):
            result[f"{key}_d{d}"] = s[key]
    for key in ("omega", "total", "parseval_gap", "M", "max_mu", "low_degree_bound", "S_min"):
        result[key] = np.array([rows[d][key] for d in cfg.dims])
    for p in QUANTILES:
        result[f"K{p:g}_over_omega"] = np.array([rows[d][f"K{p:g}"] / rows[d]["omega"] for d in cfg.dims])
    result["below_half_omega"] = np.array([rows[d]["below"][int(rows[d]["omega"] / 2)] for d in cfg.dims])
    d_arr = np.asarray(cfg.dims, dtype=float)
    result["log_S_min_over_d_log_d"] = np.log(result["S_min"]) / (d_arr * np.log(d_arr))
    result["max_parseval_gap"] = float(result["parseval_gap"].max())
    result["max_below_half_omega"] = float(result["below_half_omega"].max())
    result["min_K0.5_over_omega"] = float(result["K0.5_over_omega"].min())
    result["S_min_at_largest_d"] = float(result["S_min"][-1])
    # depth 3, and the Monte Carlo correlation, on sampled pairs
    neurons, errors, bounds, corr, corr_se, h_norm = [], [], [], [], [], []
    for d in tqdm(cfg.network_dims, desc="daniely_separation: depth-3 networks", unit="d",
                  disable=not study.show_progress()):
        Z = sample_daniely(cfg.n, d, rng=np.random.default_rng([cfg.seed, d]))  # (n, 2d)
        net = daniely_network(d, tolerance=cfg.tolerance, device=cfg.device)
        values = to_numpy(net(to_device(Z, cfg.device)))
        f = to_numpy(daniely_function(Z))  # (n,)
        errors.append(float(np.abs(values - f).max()))
        neurons.append(net.n_neurons)
        bounds.append(float(net.meta["error_bound"]))
        del net
        if d not in rows:
            rows[d] = spectrum(d)
        c, se, hn = attained_correlation(Z, f, d, rows[d]["mu"], rows[d]["M"])
        corr.append(c)
        corr_se.append(se)
        h_norm.append(hn)
    result["network_neurons"] = np.array(neurons, dtype=np.int64)
    result["network_error"] = np.array(errors)
    result["network_error_bound"] = np.array(bounds)
    result["network_M"] = np.array([rows[d]["M"] for d in cfg.network_dims])
    result["attained_correlation"] = np.array(corr)
    result["attained_correlation_se"] = np.array(corr_se)
    result["h_rms"] = np.array(h_norm)
    result["max_network_error"] = float(max(errors))
    result["max_network_neurons"] = int(max(neurons))
    nd = np.asarray(cfg.network_dims, dtype=float)
    result["network_neurons_slope"] = float(np.polyfit(np.log(nd), np.log(neurons), 1)[0]) if nd.size > 1 else float("nan")
    return result


def plot(result: dict, cfg: Config):
    from matplotlib import colormaps

    fig, axes = study.new_figure(1, 3, size=(5.0, 4.0))
    dims = [int(d) for d in result["dims"]]
    cmap = colormaps["viridis"]
    ax = axes[0, 0]
    for i, d in enumerate(dims):
        below = result[f"below_d{d}"]
        omega = result["omega"][i]
        ax.plot(np.arange(below.size) / omega, below, color=cmap(0.9 * i / max(1, len(dims) - 1)), lw=1.3,
                label=f"d = {d}")
    ax.axvline(1.0, color="0.4", ls="--", lw=0.8)
    ax.set_xlim(0, 1.3)
    ax.set_xlabel(r"degree K / $\omega$,  $\omega = \pi d^3$")
    ax.set_ylabel(r"energy at degrees < K, fraction of $\|f\|^2$")
    ax.set_title("the harmonic energy of f sits at degree ~ $\\omega$", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[0, 1]
    ax.semilogy(dims, result["M"], "o-", lw=1.5, label=r"$M = (\sum_k \mu_k^2)^{1/2}$: max $\langle f, h\rangle$")
    ax.semilogy(dims, result["max_mu"], "s--", lw=1.0, ms=4, label=r"$\max_k |\mu_k|$")
    ax.semilogy(dims, result["low_degree_bound"], "^:", lw=1.0, ms=4,
                label=r"$\min_K (E_{<K} + \|f\|^2 / N(d, K))^{1/2}$")
    nd = [int(d) for d in result["network_dims"]]
    corr, se = result["attained_correlation"], result["attained_correlation_se"]
    resolved = np.abs(corr) > 3 * se  # below 3 standard errors the estimate says nothing on a log axis
    ax.errorbar(np.array(nd)[resolved], np.abs(corr)[resolved], yerr=2 * se[resolved], fmt="k.", ms=5, capsize=2,
                label=r"Monte Carlo $\langle f, h^*\rangle$ $\pm 2$ s.e. (where > 3 s.e.)")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("correlation with a unit-norm neuron-type h")
    ax.set_title(r"h(x, y) = $\psi(\langle v, x\rangle, \langle v', y\rangle)$: exact", fontsize=10)
    ax.set_ylim(result["M"].min() / 10, 3)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower left")
    ax = axes[0, 2]
    ax.semilogy(dims, result["S_min"], "o-", color="C3", lw=1.5,
                label=r"depth 2: $\sum_i |a_i| \|\sigma_i\| \geq \|f\|^2 / 2M$ (proven)")
    ax.semilogy(nd, result["network_neurons"], "k*-", ms=10, lw=1.2, label=f"depth 3: neurons at sup error {cfg.tolerance:g}")
    for d, n, e in zip(nd, result["network_neurons"], result["network_error"]):
        ax.annotate(f"{e:.3f}", (d, n), textcoords="offset points", xytext=(4, -10), fontsize=6.5)
    ax.set_xlim(dims[0] - 0.5, dims[-1] + 0.9)  # room for the last label
    ax.set_xlabel("dimension d (numbers: measured sup error of the depth-3 net)")
    ax.set_ylabel("depth 2: $S_{min}$ (error 1/2);  depth 3: neurons")
    ax.set_title(r"depth 2 needs $2^{\Omega(d \log d)}$, depth 3 ~ $d^3$", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(r"Daniely 2017: $f(x, y) = \sin(\pi d^3 \langle x, y\rangle)$ on $S^{d-1} \times S^{d-1}$")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
