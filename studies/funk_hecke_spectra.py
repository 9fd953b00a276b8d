"""Funk-Hecke spectra of activations: |mu_k(relu^alpha)| decays like k^-(d/2 + alpha), half of them vanish.

Claim (Bach 2017, "Breaking the curse of dimensionality with convex neural networks", JMLR 18,
arXiv:1412.8690, Appendix D.2, translated to S^{d-1} in R^d): the Funk-Hecke coefficients of
sigma(t) = max(0, t)^alpha are

    mu_k = Gamma(alpha + 1) Gamma(d/2) / (2^{alpha + 1} Gamma(1 + (alpha - k)/2) Gamma((alpha + k + d)/2)),

exactly zero when k > alpha and k - alpha is even, and |mu_k| ~ C k^{-(d/2 + alpha)} otherwise.
Smooth activations (sigmoid, tanh) have coefficients that decay faster than any power, with the
parity of the function (tanh is odd: every even mu_k vanishes; sigmoid - 1/2 too, but for mu_0).

The study draws |mu_k| against k on log-log axes for relu^alpha, alpha = 0, 1, 2 (step, relu,
squared relu), sigmoid and tanh, in d = 3, 10 and 50; dashed lines carry the predicted slopes and
crosses on the lower edge mark the coefficients that vanish exactly. It checks the fitted slope of
the nonvanishing coefficients over k in [kmax/2, kmax] against -(d/2 + alpha): the correction to
the power law is O(d^2 / k), which is why d = 50 needs kmax in the tens of thousands.

Runtime: 0.2 s of compute with the defaults (the gallery's run, its sidecar's wall time) and 0.1 s
with --quick on one CPU core (closed forms for relu^alpha, Gauss-Jacobi quadrature for the smooth
activations), plus about 2.5 s to import and draw.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shallow import study
from shallow._validation import check_dimension, check_integer, check_nonnegative
from shallow.activations import funk_hecke, get_activation


@dataclasses.dataclass(frozen=True)
class Config:
    dims: tuple = (3, 10, 50)
    alphas: tuple = (0.0, 1.0, 2.0)
    kmax: int = 20_000  # closed forms: cheap; large k so that d = 50 is in the asymptotic regime
    kmax_smooth: int = 60  # smooth activations hit the float64 floor long before
    smooth: tuple = ("sigmoid", "tanh")
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        """Refuse a bad value now, naming its field, instead of inside the spectra or their fits."""
        if not self.dims or not self.alphas:
            raise ValueError(f"dims and alphas must each list at least one value, got {self.dims!r} and {self.alphas!r}")
        for d in self.dims:
            check_dimension(d, "dims")  # the sphere S^{d-1}
        for alpha in self.alphas:
            check_nonnegative(alpha, "alphas")  # relu^alpha, alpha >= 0
        # the slope is fitted over [kmax/2, kmax], where every other coefficient may vanish: two survive from 5 on
        check_integer(self.kmax, "kmax", minimum=5)
        check_integer(self.kmax_smooth, "kmax_smooth", minimum=2)  # an even and an odd coefficient k >= 1
        for name in self.smooth:
            try:
                get_activation(name)
            except ValueError as err:
                raise ValueError(f"smooth must list activation names, got {name!r}: {err}") from None


QUICK = {"dims": (3, 10, 50), "kmax": 20_000, "kmax_smooth": 40}
HOST_ONLY = "closed forms and one-dimensional scipy quadratures"


def compute(cfg: Config) -> dict:
    result = {}
    k = np.arange(cfg.kmax + 1)
    for d in cfg.dims:
        for alpha in cfg.alphas:
            mu = funk_hecke(get_activation("relu_power", alpha=alpha), d, cfg.kmax)
            key = f"d{d}_relu{alpha:g}"
            result[f"mu_{key}"] = mu
            tail = (k >= cfg.kmax // 2) & (mu != 0)
            slope = np.polyfit(np.log(k[tail]), np.log(np.abs(mu[tail])), 1)[0]
            result[f"slope_{key}"] = float(slope)
            result[f"predicted_slope_{key}"] = -(d / 2 + alpha)
            # Which coefficients vanish, against the rule k > alpha, k - alpha even.
            rule = (k > alpha) & ((k - alpha) % 2 == 0)
            result[f"zeros_match_{key}"] = bool(np.array_equal(mu == 0, rule))
        for name in cfg.smooth:
            mu = funk_hecke(name, d, cfg.kmax_smooth)
            result[f"mu_d{d}_{name}"] = mu
            odd_part_only = np.abs(mu[2::2]).max() / np.abs(mu[1::2]).max()
            result[f"even_over_odd_d{d}_{name}"] = float(odd_part_only)
    return result


def plot(result: dict, cfg: Config):
    fig, axes = study.new_figure(1, len(cfg.dims), size=(4.6, 3.8))
    colours = {0.0: "C0", 1.0: "C1", 2.0: "C2", "sigmoid": "C3", "tanh": "C4"}
    for ax, d in zip(axes[0], cfg.dims):
        floor = np.inf
        for alpha in cfg.alphas:
            key = f"d{d}_relu{alpha:g}"
            mu = result[f"mu_{key}"]
            k = np.arange(mu.size)
            live = mu != 0
            label = {0.0: "step", 1.0: "relu", 2.0: "relu$^2$"}.get(alpha, f"relu$^{{{alpha:g}}}$")
            ax.loglog(k[live][1:], np.abs(mu[live][1:]), color=colours.get(alpha), lw=1.4,
                      label=f"{label}: slope {result[f'slope_{key}']:.2f}")
            # predicted power law through the last nonvanishing coefficient
            kk = np.array([k[live][-1] / 30, k[live][-1]])
            ref = np.abs(mu[live][-1]) * (kk / kk[-1]) ** result[f"predicted_slope_{key}"]
            ax.loglog(kk, ref, "k--", lw=0.8)
            floor = min(floor, np.abs(mu[live][-1]))
        for name in cfg.smooth:
            mu = result[f"mu_d{d}_{name}"]
            k = np.arange(mu.size)
            # odd degrees only (the even ones vanish), down to the float64 quadrature floor
            live = (k % 2 == 1) & (np.abs(mu) > 1e-13 * np.abs(mu).max())
            ax.loglog(k[live], np.abs(mu[live]), "o-", ms=2.5, lw=0.8, color=colours.get(name),
                      label=f"{name} (odd k)")
        # exact zeros of relu (odd k >= 3) along the lower edge
        mu_relu = result.get(f"mu_d{d}_relu1")
        if mu_relu is not None:
            zeros = np.flatnonzero(mu_relu[:60] == 0)
            ax.plot(zeros, np.full(zeros.size, floor), "kx", ms=3, label="relu: $\\mu_k = 0$")
        ax.set_title(f"d = {d}")
        ax.set_xlabel("degree k")
        ax.set_ylim(bottom=floor / 10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right")  # the lower left holds the crosses of the zeros
    axes[0, 0].set_ylabel(r"$|\mu_k(\sigma)|$")
    fig.suptitle(r"Funk-Hecke coefficients: $|\mu_k(\mathrm{relu}^\alpha)| \sim k^{-(d/2+\alpha)}$ (dashed)")
    return fig


def main(argv=None):
    return study.main(__name__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
