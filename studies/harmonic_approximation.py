"""Degree-K harmonic approximation: a relu neuron's squared L2 error decays like K^-3, a smooth function's like rho^-2K.

Claim. On S^{d-1} with the uniform probability measure tau_d, the best approximation of f in
L2(tau_d) by spherical harmonics of degree <= K is the truncation P_{<=K} f of its harmonic series,
and its squared error is the energy of the degrees above K. For a neuron f(x) = sigma(<w, x>)
(|w| = 1) the Funk-Hecke formula gives the degree-k component mu_k(sigma) N(d, k) P_{k,d}(<w, x>),
of energy mu_k^2 N(d, k), so that exactly

    E_K = || f - P_{<=K} f ||^2_{L2(tau_d)} = sum_{k > K} mu_k(sigma)^2 N(d, k).

For sigma = relu^alpha, |mu_k| ~ k^{-(d/2 + alpha)} (Bach 2017, "Breaking the curse of dimensionality
with convex neural networks", JMLR 18, arXiv:1412.8690, Appendix D.2, translated to S^{d-1}) and
N(d, k) ~ 2 k^{d-2} / (d-2)!, so mu_k^2 N(d, k) ~ k^{-(2 + 2 alpha)} on the degrees where mu_k != 0
(every other degree) and

    E_K ~ C(d, alpha) K^{-(1 + 2 alpha)}:  K^-3 for relu, K^-1 for the step, K^-5 for relu^2,

in every dimension (derived here from the Funk-Hecke coefficients; the exponent does not depend on d,
the constant and the onset of the asymptotic regime, K >> d, do). The L2 error itself is the square
root, K^{-3/2} for relu. For a function analytic on [-1, 1] the decay is exponential (Bernstein):
for g(t) = 1 / (c - t), analytic inside the ellipse with foci +-1 through c, of parameter
rho = c + sqrt(c^2 - 1), the Gegenbauer coefficients decay like rho^{-k} and E_K ~ rho^{-2K} up to a
power of K (c = 1.25 gives rho = 2).

What is computed.
* relu^alpha tails: mu_k in closed form (:func:`shallow.activations.funk_hecke`), N(d, k) exactly
  (:func:`shallow.harmonics.num_harmonics`), the energies in logarithms, the tails summed backwards
  from 16 kmax plus a power-law remainder; the closure sum_k mu_k^2 N(d, k) = ||f||^2 =
  E[sigma(t)^2] = Gamma(d/2) Gamma(alpha + 1/2) / (2 sqrt(pi) Gamma(d/2 + alpha)) checks the series.
  The fitted slope of log E_K against log K over the even K in [kmax/4, kmax] is compared with
  -(1 + 2 alpha).
* the smooth zonal function g(<w, x>) = 1/(c - <w, x>): mu_k by Gauss-Jacobi quadrature
  (:func:`shallow.harmonics.project_zonal`, spectrally accurate), E_K down to 1e-20 ||g||^2, and the
  slope of log E_K against K over the last ten degrees compared with -2 log rho.
* independent checks of the exact relu series in d = 3 and 4, with a generic direction w: the
  coefficients <f, Y_{k,j}> of the full orthonormal basis (:func:`shallow.harmonics.spherical_harmonics`,
  in its own coordinates) are computed by a product quadrature built around w (Gauss-Jacobi in <w, x>
  split at 0, where relu has its kink, times a rule on the orthogonal sphere), which is exact for the
  piecewise-polynomial integrands f Y and (f - P_{<=K} f)^2; the squared residual is integrated by
  the same rule (quadrature estimate, agrees to rounding) and averaged over fresh uniform points
  (Monte Carlo estimate, within its standard error).

Measured (defaults): fitted relu slopes -2.998 (d = 3), -2.996 (5), -2.993 (10), -2.985 (20) and
-2.964 (50) against -3; step -0.999 and relu^2 -4.996 in d = 5 against -1 and -5; closure of the
series within 2e-14 for relu and relu^2 (1e-13 for the smooth function; 6e-11 for the step, whose
tail remainder beyond 16 kmax is only estimated); the smooth function's slopes -1.385 (d = 3)
and -1.388 (5) against -2 log 2 = -1.386, steeper in
d >= 10 at these K (-1.41, -1.52, -2.09 in d = 10, 20, 50: there the rate rho^{-2K} sets in for K >> d,
below the float64 floor); quadrature estimates within 5e-14 (relative) of the series in d = 3 and 4,
Monte Carlo estimates (n = 20000) within 1.3 standard errors at every K.

Runtime: about 2 to 5 s of compute with the defaults (1.6 s in the gallery's run, its sidecar's
wall time), 1 s with --quick, on one CPU core (plus about 3 s to import and
draw).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from shallow import study
from shallow._validation import (
    check_dimension,
    check_integer,
    check_nonnegative,
    check_positive,
)
from shallow.activations import funk_hecke, get_activation
from shallow.backend import to_device, to_numpy
from shallow.harmonics import num_harmonics, project_zonal, spherical_harmonics
from shallow.sphere import (
    gauss_jacobi,
    gegenbauer_quadrature,
    log_inner_product_constant,
    sample_sphere,
)


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (3, 5, 10, 20, 50)  # relu neuron tails
    kmax: int = 4000  # plotted and fitted degrees; tails summed up to 16 kmax
    alphas: tuple = (0.0, 1.0, 2.0)  # relu^alpha (step, relu, relu^2) ...
    alpha_d: int = 5  # ... in this dimension
    smooth_c: float = 1.25  # g(t) = 1/(c - t), rho = c + sqrt(c^2 - 1) = 2
    smooth_kmax: int = 48
    check_dims: tuple = (3, 4)  # quadrature and Monte Carlo checks of the relu series
    check_kmax: tuple = (24, 12)  # highest degree of the check in each of check_dims
    mc_n: int = 20_000  # Monte Carlo points of the check
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the series, quadratures or fits."""
        if not self.dims:
            raise ValueError("dims must list at least one dimension d >= 2, got ()")
        for d in self.dims:
            check_dimension(d, "dims")  # the sphere S^{d-1}
        for alpha in self.alphas:
            check_nonnegative(alpha, "alphas")  # relu^alpha, alpha >= 0
        check_dimension(self.alpha_d, "alpha_d")
        check_integer(self.kmax, "kmax", minimum=4)  # two even degrees in [kmax/4, kmax] for the fitted slope
        check_integer(self.smooth_kmax, "smooth_kmax", minimum=2)
        if not check_positive(self.smooth_c, "smooth_c") > 1:
            raise ValueError(f"smooth_c must be > 1 (g(t) = 1/(c - t) is analytic on [-1, 1]), got {self.smooth_c!r}")
        if len(self.check_dims) != len(self.check_kmax):
            raise ValueError(f"check_kmax must give one degree per entry of check_dims, got {self.check_kmax!r} "
                             f"for check_dims {self.check_dims!r}")
        for d in self.check_dims:
            check_integer(d, "check_dims", minimum=3)  # the product rule recurses down to the circle S^1
        for k in self.check_kmax:
            check_integer(k, "check_kmax", minimum=0)
        check_integer(self.mc_n, "mc_n", minimum=2)  # a standard error needs two points


QUICK = {"kmax": 2000, "dims": (3, 5, 10, 20), "check_kmax": (16, 8), "mc_n": 10_000}

SMOOTH_FLOOR = 1e-20  # relative tails below this are not fitted (quadrature rounding of mu_k ~ 1e-16)


# ----------------------------------------------------------------------------- exact series

def relu_power_energies(alpha: float, d: int, kmax: int) -> np.ndarray:
    """mu_k(relu^alpha)^2 N(d, k), k = 0..kmax, computed in logarithms (N(d, k) ~ k^{d-2} is huge)."""
    mu = funk_hecke(get_activation("relu_power", alpha=alpha), d, kmax)  # (kmax + 1,)
    e = np.zeros(kmax + 1)
    live = np.flatnonzero(mu != 0)
    log_n = np.array([math.log(num_harmonics(d, int(k))) for k in live])
    e[live] = np.exp(2 * np.log(np.abs(mu[live])) + log_n)
    return e


def relu_power_norm2(alpha: float, d: int) -> float:
    """||relu^alpha(<w, .>)||^2_{L2(tau_d)} = E[t_+^{2 alpha}], t = <w, x>, in closed form."""
    log = math.lgamma(d / 2) + math.lgamma(alpha + 0.5) - math.lgamma(d / 2 + alpha)
    return math.exp(log) / (2 * math.sqrt(math.pi))


def tails(e: np.ndarray, remainder: float = 0.0) -> np.ndarray:
    """E_K = sum_{k > K} e_k + remainder, K = 0..len(e)-1, summed from the smallest terms up."""
    back = np.cumsum(e[::-1])[::-1]  # back[K] = sum_{k >= K}
    return np.append(back[1:], 0.0) + remainder


def relu_power_tail(alpha: float, d: int, kmax: int, kbig: int):
    """(E_K for K = 0..kmax, closure error) of relu^alpha(<w, .>) on S^{d-1}.

    The series is summed to kbig; beyond, the nonzero terms (every other degree) follow
    e_k ~ e_L (k / L)^{-p}, p = 2 + 2 alpha, whose sum is about e_L L / (2 (p - 1)).
    """
    e = relu_power_energies(alpha, d, kbig)
    last = int(np.flatnonzero(e)[-1])
    p = 2 + 2 * alpha
    remainder = e[last] * last / (2 * (p - 1))
    E = tails(e, remainder)
    closure = (e[0] + E[0]) / relu_power_norm2(alpha, d) - 1
    return E[: kmax + 1], float(closure)


def fit_power(K, E) -> float:
    """Slope of log E against log K."""
    return float(np.polyfit(np.log(K), np.log(E), 1)[0])


# ----------------------------------------------------------------------------- independent check

def _half_sphere_t_rule(q: int, d: int):
    """Gauss rule for the density w_d restricted to [0, 1]: nodes t and weights (summing to 1/2).

    w_d(t) = c_d (1 - t)^a (1 + t)^a, a = (d - 3)/2. With t = (1 + u)/2 the factor (1 - t)^a goes
    into a Gauss-Jacobi rule in u and the smooth (1 + t)^a multiplies the weights: exact for
    polynomials of degree <= 2q - 1 when a is an integer (odd d), spectrally accurate otherwise.
    """
    a = 0.5 * (d - 3)
    u, log_w = gauss_jacobi(q, a, 0.0)
    t = 0.5 * (1 + u)
    log_w = log_w + log_inner_product_constant(d) + (a + 1) * math.log(0.5) + a * np.log1p(t)
    return t, np.exp(log_w)


def sphere_rule(d: int, degree: int):
    """A product rule on S^{d-1}, exact for polynomials of degree <= ``degree``: (points (n, d), weights (n,)).

    x = (t, sqrt(1 - t^2) y) with t from the Gauss rule of w_d and y from the rule on S^{d-2};
    on S^1, degree + 1 equispaced angles.
    """
    if d == 2:
        M = degree + 1
        phi = 2 * np.pi * np.arange(M) / M
        return np.stack([np.cos(phi), np.sin(phi)], axis=1), np.full(M, 1.0 / M)
    t, wt = gegenbauer_quadrature(degree // 2 + 1, d)
    Y, wy = sphere_rule(d - 1, degree)
    s = np.sqrt(1 - t * t)
    X = np.concatenate([np.repeat(t, len(wy))[:, None], (s[:, None, None] * Y[None]).reshape(-1, d - 1)], axis=1)
    return X, np.outer(wt, wy).ravel()


def split_sphere_rule(d: int, degree: int):
    """A rule on S^{d-1} exact for functions that are polynomials of degree <= ``degree`` on each
    hemisphere {x_1 > 0} and {x_1 < 0} (such as relu(x_1) times a polynomial)."""
    t, wt = _half_sphere_t_rule(degree // 2 + 1, d)
    t, wt = np.concatenate([-t[::-1], t]), np.concatenate([wt[::-1], wt])
    Y, wy = sphere_rule(d - 1, degree)
    s = np.sqrt(1 - t * t)
    X = np.concatenate([np.repeat(t, len(wy))[:, None], (s[:, None, None] * Y[None]).reshape(-1, d - 1)], axis=1)
    return X, np.outer(wt, wy).ravel()


def truncation_check(d: int, K: int, n_mc: int, rng, device: str = "cpu") -> dict:
    """Squared error of the degree-<=k truncation of relu(<w, .>), k = 0..K, for a random w on S^{d-1}.

    Returns the quadrature estimate, the Monte Carlo estimate and its standard error.
    """
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]  # (d, d) a random rotation; w = Q[:, 0]
    w = Q[:, 0]
    Z, omega = split_sphere_rule(d, 2 * K + 2)  # (n_q, d): exact for (relu - P_K relu)^2 on each half
    Xq = to_device(Z @ Q.T, device)  # rule points in the standard coordinates of the harmonics
    Xm = sample_sphere(n_mc, d, rng=rng, device=device)  # (n_mc, d)
    w_dev = to_device(w, device)
    omega_dev = to_device(omega, device)
    rq = Xq @ w_dev
    rq = rq * (rq > 0)  # residual at the rule points, starts as f
    rm = Xm @ w_dev
    rm = rm * (rm > 0)
    quad, mc, se = [], [], []
    for k in range(K + 1):
        Yq = spherical_harmonics(Xq, k)  # (n_q, N(d, k))
        coef = Yq.T @ (omega_dev * rq)  # <f - P_{<k} f, Y_kj> = <f, Y_kj>: exact by the rule
        rq = rq - Yq @ coef
        rm = rm - spherical_harmonics(Xm, k) @ coef
        quad.append(float(omega_dev @ (rq * rq)))
        sq = to_numpy(rm * rm)
        mc.append(float(sq.mean()))
        se.append(float(sq.std(ddof=1) / math.sqrt(n_mc)))
    return {"quad": np.array(quad), "mc": np.array(mc), "mc_se": np.array(se), "n_quad": len(omega)}


# ----------------------------------------------------------------------------- study

def compute(cfg: Config) -> dict:
    result = {}
    kbig = 16 * cfg.kmax
    K = np.arange(cfg.kmax + 1)
    fit = (K >= cfg.kmax // 4) & (K % 2 == 0)
    runs = [(1.0, d) for d in cfg.dims] + [(alpha, cfg.alpha_d) for alpha in cfg.alphas if alpha != 1.0]
    if cfg.alpha_d not in cfg.dims and 1.0 in cfg.alphas:
        runs.append((1.0, cfg.alpha_d))
    for alpha, d in runs:
        key = f"relu{alpha:g}_d{d}"
        E, closure = relu_power_tail(alpha, d, cfg.kmax, kbig)
        norm2 = relu_power_norm2(alpha, d)
        result[f"tail_{key}"] = E / norm2  # relative squared error
        result[f"slope_{key}"] = fit_power(K[fit], E[fit])
        result[f"predicted_slope_{key}"] = -(1 + 2 * alpha)
        result[f"closure_{key}"] = closure

    rho = cfg.smooth_c + math.sqrt(cfg.smooth_c**2 - 1)
    result["smooth_rho"] = rho
    for d in cfg.dims:
        mu = project_zonal(lambda t: 1 / (cfg.smooth_c - t), d, cfg.smooth_kmax)
        e = mu**2 * np.array([float(num_harmonics(d, k)) for k in range(cfg.smooth_kmax + 1)])
        t, wt = gegenbauer_quadrature(256, d)
        norm2 = float(wt @ (cfg.smooth_c - t) ** -2.0)
        E = tails(e) / norm2
        result[f"tail_smooth_d{d}"] = E
        result[f"closure_smooth_d{d}"] = float(e.sum() / norm2 - 1)
        Ks = np.flatnonzero(E > SMOOTH_FLOOR)[-10:]
        result[f"slope_smooth_d{d}"] = float(np.polyfit(Ks, np.log(E[Ks]), 1)[0])
    result["predicted_slope_smooth"] = -2 * math.log(rho)

    rng = np.random.default_rng(cfg.seed)
    for d, Kc in zip(cfg.check_dims, cfg.check_kmax):
        chk = truncation_check(d, Kc, cfg.mc_n, rng, cfg.device)
        exact, _ = relu_power_tail(1.0, d, Kc, kbig)
        result[f"check_quad_d{d}"] = chk["quad"]
        result[f"check_mc_d{d}"] = chk["mc"]
        result[f"check_mc_se_d{d}"] = chk["mc_se"]
        result[f"check_exact_d{d}"] = exact
        result[f"check_quad_relative_error_d{d}"] = float(np.max(np.abs(chk["quad"] / exact - 1)))
        result[f"check_mc_max_zscore_d{d}"] = float(np.max(np.abs(chk["mc"] - exact) / chk["mc_se"]))
        result[f"check_quad_points_d{d}"] = chk["n_quad"]
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(2, 2, size=(5.4, 4.2))
    K = np.arange(1, cfg.kmax + 1)
    even = K % 2 == 0

    ax = axes[0, 0]
    for i, d in enumerate(cfg.dims):
        key = f"relu1_d{d}"
        E = result[f"tail_{key}"][1:]
        ax.loglog(K[even], E[even], color=f"C{i}", lw=1.4, label=f"d = {d}: slope {result[f'slope_{key}']:.3f}")
    anchor = result[f"tail_relu1_d{cfg.dims[0]}"][cfg.kmax]
    ax.loglog(K[even], anchor * (K[even] / cfg.kmax) ** -3.0, "k--", lw=0.8, label="$K^{-3}$")
    for j, d in enumerate(cfg.check_dims):
        n2 = relu_power_norm2(1.0, d)
        Kc = np.arange(result[f"check_quad_d{d}"].size)
        sel = (Kc >= 1) & ((Kc % 2 == 0) | (Kc == 1))
        ax.plot(Kc[sel], result[f"check_quad_d{d}"][sel] / n2, "s", mfc="none", ms=5, color="k" if j == 0 else "0.5",
                label=f"d = {d}: quadrature, generic w")
    ax.set_xlabel("degree K")
    ax.set_ylabel(r"$\|f - P_{\leq K} f\|^2 / \|f\|^2$")
    ax.set_title(r"relu$(\langle w, x\rangle)$: squared error of the degree-$\leq K$ truncation", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[0, 1]
    names = {0.0: "step", 1.0: "relu", 2.0: r"relu$^2$"}
    for i, alpha in enumerate(cfg.alphas):
        key = f"relu{alpha:g}_d{cfg.alpha_d}"
        E = result[f"tail_{key}"][1:]
        ax.loglog(K[even], E[even], color=f"C{i}", lw=1.4,
                  label=f"{names.get(alpha, f'relu^{alpha:g}')}: slope {result[f'slope_{key}']:.3f} "
                        f"(theory {result[f'predicted_slope_{key}']:g})")
        ref = E[even][-1] * (K[even] / cfg.kmax) ** result[f"predicted_slope_{key}"]
        ax.loglog(K[even], ref, "k--", lw=0.7)
    ax.set_xlabel("degree K")
    ax.set_ylabel(r"$\|f - P_{\leq K} f\|^2 / \|f\|^2$")
    ax.set_title(rf"relu$^\alpha$ in d = {cfg.alpha_d}: $K^{{-(1+2\alpha)}}$ (dashed)", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[1, 0]
    rho = result["smooth_rho"]
    for i, d in enumerate(cfg.dims):
        E = result[f"tail_smooth_d{d}"]
        Ks = np.arange(E.size)
        live = E > SMOOTH_FLOOR
        ax.semilogy(Ks[live], E[live], "o-", ms=2.5, lw=1, color=f"C{i}",
                    label=f"d = {d}: slope {result[f'slope_smooth_d{d}']:.3f}")
    Ks = np.arange(cfg.smooth_kmax + 1)
    E3 = result[f"tail_smooth_d{cfg.dims[0]}"]
    ax.semilogy(Ks, E3[10] * rho ** (-2.0 * (Ks - 10)), "k--", lw=0.8,
                label=rf"$\rho^{{-2K}}$, slope $-2\log\rho$ = {result['predicted_slope_smooth']:.3f}")
    ax.set_ylim(SMOOTH_FLOOR / 10, 2)
    ax.set_xlim(-1, max(int(np.flatnonzero(result[f"tail_smooth_d{d}"] > SMOOTH_FLOOR)[-1]) for d in cfg.dims) + 3)
    ax.set_xlabel("degree K")
    ax.set_ylabel(r"$\|g - P_{\leq K} g\|^2 / \|g\|^2$")
    ax.set_title(rf"smooth $g(\langle w, x\rangle) = 1/({cfg.smooth_c:g} - \langle w, x\rangle)$, $\rho$ = {rho:g}",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[1, 1]
    for j, d in enumerate(cfg.check_dims):
        exact = result[f"check_exact_d{d}"]
        Kc = np.arange(exact.size)
        sel = (Kc % 2 == 0) | (Kc == 1)
        ax.errorbar(Kc[sel] + 0.15 * j, result[f"check_mc_d{d}"][sel] / exact[sel] - 1,
                    yerr=result[f"check_mc_se_d{d}"][sel] / exact[sel], fmt="o", ms=3, capsize=2, color=f"C{j}",
                    label=f"d = {d}: Monte Carlo, n = {cfg.mc_n} "
                          f"(max |z| = {result[f'check_mc_max_zscore_d{d}']:.1f})")
        ax.plot(Kc[sel] + 0.15 * j, result[f"check_quad_d{d}"][sel] / exact[sel] - 1, "s", mfc="none", ms=5,
                color=f"C{j}", label=f"d = {d}: quadrature ({result[f'check_quad_points_d{d}']} points; "
                                     f"max rel. dev. {result[f'check_quad_relative_error_d{d}']:.0e})")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("degree K")
    ax.set_ylabel("estimate / Funk-Hecke series - 1")
    ax.set_title("independent checks: projections on the basis $Y_{k,j}$, generic $w$", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Best degree-K spherical-harmonic approximation on $S^{d-1}$ (squared $L^2(\\tau_d)$ error)")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
