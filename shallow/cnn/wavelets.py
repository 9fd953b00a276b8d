r"""Two-dimensional Gabor and Morlet wavelets in the Fourier domain, their filter banks and the wavelet transform.

A Gabor function of scale sigma, orientation theta, frequency xi and slant s is a Gaussian
envelope modulated by a plane wave,

    g(u) = exp(-u^T A u) e^{i xi e_theta . u} / (2 pi sigma^2 / s),
    A = R_theta diag(1, s^2) R_theta^T / (2 sigma^2),   e_theta = (cos theta, sin theta),

u = (row, column) in pixels. The envelope has standard deviation sigma along e_theta and sigma / s
across it, and unit integral. Its Fourier transform (f_hat(omega) = int f(u) e^{-i omega . u} du) is
a Gaussian centred at xi e_theta,

    g_hat(omega) = exp(-(sigma^2 / 2) [ (e_theta . (omega - xi e_theta))^2
                                      + (e_theta^perp . (omega - xi e_theta))^2 / s^2 ]).

The Morlet wavelet subtracts the multiple of the envelope that makes the mean zero,
psi = g - K g_0 (g_0 the envelope, xi = 0), with K = g_hat(0) / g_0_hat(0) on the discrete grid,
so that psi_hat(0) = 0 exactly (Bruna and Mallat 2013, Sec. III.A).

Filters on an M x N grid
------------------------
All filters are periodic on the M x N grid of the image: the filter applied by the discrete
(circular) convolution is the periodisation u -> sum_p g(u + (M, N) p). By Poisson's summation
formula its discrete Fourier transform is the sum over the aliases of the continuous one,

    G[k] = sum_{n in Z^2} g_hat(omega_k + 2 pi n),   omega_k = (2 pi k_1 / M, 2 pi k_2 / N),

which is what :func:`gabor_2d` and :func:`morlet_2d` evaluate, in float64, with enough aliases n
that the neglected terms are below 1e-17 of the peak. The results are real (the envelopes are
even) and are returned on numpy's FFT grid (``numpy.fft.fftfreq`` order).

The filter bank
---------------
:func:`filter_bank` builds the standard bank of the 2-D scattering transform (Bruna and Mallat
2013; the constants of Kymatio, Andreux et al. 2020): J scales j = 0, ..., J - 1 and L orientations
l = 0, ..., L - 1,

    psi_{j, l} = Morlet(sigma = 0.8 2^j, theta_l, xi = (3 pi / 4) 2^{-j}, s = 4 / L),
    theta_l = (c - l) pi / L,  c = trunc(L / 2 - 1)   (for L = 8: 3 pi / 8 down to -pi / 2),
    phi_J   = Gaussian(sigma = 0.8 2^{J - 1}, s = 1),

so the orientations cover a half circle, which suffices for real images: |x * conj(psi)| =
|x * psi| for real x. phi_J averages over about 2^J pixels; phi_hat(0) = 1 up to the aliases.

Littlewood-Paley
----------------
For a real image x the energy of the (non-subsampled, periodic) wavelet transform
Wx = (x * phi_J, (x * psi_{j, l})_{j, l}) is

    ||Wx||^2 = (1 / MN) sum_k |x_hat[k]|^2 A[k],
    A[k] = |phi_hat[k]|^2 + (1/2) sum_{j, l} (|psi_hat_{j, l}[k]|^2 + |psi_hat_{j, l}[-k]|^2),

since |x_hat[-k]| = |x_hat[k]|. So min A ||x||^2 <= ||Wx||^2 <= max A ||x||^2: W is a frame with
bounds min A and max A (:func:`littlewood_paley`, :func:`frame_bounds`), a contraction when
max A <= 1. Kymatio's constants do not normalise A. With L = 8, max A = |phi_hat(0)|^2 = 1 (to 3e-5,
the aliases of phi_hat) for J <= 2, and 1.01 to 1.05 for J = 3, 4 (the wavelets of neighbouring
scales overlap); with L = 2, max A = 1.075. min A is small (0.12 for L = 8): the corners of the
frequency square, |omega| near pi sqrt(2), are poorly covered by the half-octave-wide wavelets at j = 0.
Nor is A close to 1 inside the disc |omega| <= pi: with L = 8 (J = 2 to 4, 64 x 64) A falls to 0.75
within |omega| <= pi / 2, averages 0.61 on the circle |omega| = 3 pi / 4 (the central frequency of
the wavelets at j = 0) and 0.35 at its lowest within |omega| <= pi. So Mallat's Littlewood-Paley
condition 1 - eps <= A <= 1 (reference 2, Eq. 2.9) holds here only with eps near 0.65 (0.25 for
images band-limited to |omega| <= pi / 2), and the energy conservation of reference 2 (Theorem 2.6),
which needs a small eps, does not: the scattering coefficients of order <= 2 keep about 65% to 93% of
||x||^2 for the smooth images measured (J = 1 to 4, periodic, not subsampled); at J = 3 about 10% is
lost to 1 - A at the first wavelet layer and 15% at the second (with the paths j_2 <= j_1, which are
not computed), and at most 3% is left to the orders >= 3.

References
----------
1. J. Bruna and S. Mallat, "Invariant scattering convolution networks", IEEE PAMI 35, 2013,
   arXiv:1203.1513, Sec. III.A (Morlet wavelets, Eq. 15-16) and Sec. II (Littlewood-Paley).
2. S. Mallat, "Group invariant scattering", Comm. Pure Appl. Math. 65, 2012, arXiv:1101.2286,
   Sec. 2.2 (the Littlewood-Paley condition, Eq. 2.9: a non-expansive wavelet transform).
3. M. Andreux et al., "Kymatio: scattering transforms in Python", JMLR 21, 2020,
   arXiv:1812.11214 (the constants sigma_0 = 0.8, xi_0 = 3 pi / 4, slant 4 / L, the angles).
4. S. Mallat, "A wavelet tour of signal processing", 3rd ed., Academic Press 2009, Sec. 4.3
   (Gabor and Morlet wavelets).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_array, check_integer, check_positive
from ..backend import get_xp

__all__ = [
    "FilterBank",
    "check_grid_shape",
    "filter_bank",
    "frame_bounds",
    "gabor_2d",
    "littlewood_paley",
    "morlet_2d",
    "orientations",
    "wavelet_transform",
]

#: Kymatio's constants (reference 3): sigma_0, xi_0; the slant is 4 / L.
SIGMA0 = 0.8
XI0 = 3.0 * np.pi / 4.0


def check_grid_shape(shape, name: str = "shape") -> tuple[int, int]:
    """``shape`` as a pair (M, N) of positive integers.

    Parameters
    ----------
    shape : tuple or list of two ints
        Image sides M, N >= 1 (numpy integers accepted; bools refused).
    name : str
        The argument's name in error messages, default "shape".

    Returns
    -------
    tuple of two Python ints

    Raises
    ------
    ValueError
        For anything but a tuple or list of length 2, or a side that is not an integer >= 1.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"{name} must be a pair (M, N) of image sides, got {shape!r}")
    return tuple(check_integer(v, name, minimum=1) for v in shape)


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


#: Most aliases n per axis in the periodisation sum (|n| <= MAX_ALIASES): the sum forms an array of
#: M N (2 n + 1)^2 terms, so a filter much narrower than a pixel (or with |xi| in the thousands)
#: would exhaust the memory instead of giving a number.
MAX_ALIASES = 256


def _aliased_gaussian(shape, sigma, theta, xi, slant):
    """sum_n g_hat(omega_k + 2 pi n) on the FFT grid: the DFT of the periodised Gabor function."""
    M, N = shape
    e = np.array([math.cos(theta), math.sin(theta)])  # e_theta, (row, column)
    # Fourier standard deviations: 1/sigma along e_theta, s/sigma across; 9 of them reach 1e-18
    reach = abs(xi) + np.pi + 9.0 * max(1.0, slant) / sigma
    if reach > 2 * np.pi * MAX_ALIASES:
        raise ValueError(f"sigma={sigma:.3g} (pixels, slant={slant:.3g}) with xi={xi:.3g} is not resolved by the pixel "
                         f"grid: its Fourier transform reaches {reach:.3g} radians per pixel, more than the "
                         f"{MAX_ALIASES} aliases of 2 pi summed on each side; sigma / max(1, slant) must be at least "
                         f"about {9.0 / (2 * np.pi * MAX_ALIASES - np.pi):.2g} pixels and |xi| at most about "
                         f"{2 * np.pi * MAX_ALIASES - np.pi:.0f}")
    n_alias = math.ceil(reach / (2 * np.pi))
    n = 2 * np.pi * np.arange(-n_alias, n_alias + 1)
    w1 = (2 * np.pi * np.fft.fftfreq(M))[:, None] + n[None, :]  # (M, n_a): omega_1 + 2 pi n_1
    w2 = (2 * np.pi * np.fft.fftfreq(N))[:, None] + n[None, :]  # (N, n_a)
    d1 = w1 - xi * e[0]
    d2 = w2 - xi * e[1]
    # (omega - xi e) in the frame (e_theta, e_theta^perp), e_perp = (-sin, cos)
    a = d1[:, :, None, None] * e[0] + d2[None, None, :, :] * e[1]  # (M, n_a, N, n_a)
    b = -d1[:, :, None, None] * e[1] + d2[None, None, :, :] * e[0]
    G = np.exp(-0.5 * sigma**2 * (a**2 + (b / slant) ** 2))
    return G.sum(axis=(1, 3))  # (M, N)


def gabor_2d(shape, sigma, theta, xi, slant=1.0):
    r"""Discrete Fourier transform of the periodised 2-D Gabor function on an M x N grid.

    Parameters
    ----------
    shape : (M, N)
        Grid size (rows, columns).
    sigma : float > 0
        Standard deviation of the envelope along e_theta, in pixels.
    theta : float
        Orientation of the modulation, radians, from the row axis towards the column axis.
    xi : float
        Central frequency, radians per pixel.
    slant : float > 0
        Aspect ratio s: the envelope has standard deviation sigma / s across e_theta.

    Returns
    -------
    G : float64 array of shape (M, N)
        G[k] = sum_{n in Z^2} g_hat(omega_k + 2 pi n) on numpy's FFT grid (module notes), with
        g_hat(omega) = exp(-(sigma^2 / 2) [a^2 + b^2 / s^2]), (a, b) the coordinates of
        omega - xi e_theta along e_theta and across it.

    Examples
    --------
    >>> G = gabor_2d((16, 16), 2.0, 0.0, 0.0)
    >>> round(float(G[0, 0]), 12)  # a unit-integral envelope: g_hat(0) = 1 (aliases < 1e-12)
    1.0
    """
    shape = check_grid_shape(shape)
    sigma = check_positive(sigma, "sigma")
    slant = check_positive(slant, "slant")
    return _aliased_gaussian(shape, sigma, _check_real(theta, "theta"), _check_real(xi, "xi"), slant)


def morlet_2d(shape, sigma, theta, xi, slant=0.5):
    r"""Discrete Fourier transform of the periodised 2-D Morlet wavelet: a Gabor function of zero mean.

    psi = g_{sigma, theta, xi, s} - K g_{sigma, theta, 0, s}, K = G_xi[0, 0] / G_0[0, 0], so that
    Psi[0, 0] = sum_u psi(u) = 0 on the grid.

    Parameters
    ----------
    shape, sigma, theta, xi, slant
        As in :func:`gabor_2d`.

    Returns
    -------
    Psi : float64 array of shape (M, N), with Psi[0, 0] = 0.

    Examples
    --------
    >>> Psi = morlet_2d((32, 32), 0.8, 0.0, 3 * np.pi / 4)
    >>> float(Psi[0, 0])
    0.0
    """
    shape = check_grid_shape(shape)
    sigma = check_positive(sigma, "sigma")
    slant = check_positive(slant, "slant")
    theta, xi = _check_real(theta, "theta"), _check_real(xi, "xi")
    G = _aliased_gaussian(shape, sigma, theta, xi, slant)
    G0 = _aliased_gaussian(shape, sigma, theta, 0.0, slant)
    Psi = G - (G[0, 0] / G0[0, 0]) * G0
    Psi[0, 0] = 0.0  # exactly, rather than up to rounding
    return Psi


def orientations(L: int) -> np.ndarray:
    """The L angles theta_l = (c - l) pi / L, c = trunc(L / 2 - 1), of the filter bank (Kymatio's order).

    Parameters
    ----------
    L : int
        Number of orientations, L >= 1.

    Returns
    -------
    float64 numpy array of shape (L,)
        Decreasing, l = 0, ..., L - 1.

    Raises
    ------
    ValueError
        For L not an integer >= 1.
    """
    L = check_integer(L, "L", minimum=1)
    c = math.trunc(L / 2 - 1)
    return (c - np.arange(L)) * np.pi / L


@dataclass(frozen=True)
class FilterBank:
    """Fourier transforms of the wavelets psi_{j, l} and of the low-pass phi_J on an M x N grid.

    Attributes
    ----------
    shape : (M, N)
    J, L : int
    kind : "morlet" or "gabor"
    psi : float64 array of shape (J, L, M, N)
        psi[j, l] = Psi_{j, l}[k] on numpy's FFT grid.
    phi : float64 array of shape (M, N)
    sigma : array of shape (J,)
        Envelope scales sigma_0 2^j.
    xi : array of shape (J,)
        Central frequencies xi_0 2^{-j}.
    theta : array of shape (L,)
        Orientations (:func:`orientations`).
    slant : float
    sigma_phi : float
        Scale of the low-pass, sigma_0 2^{J - 1}.
    """

    shape: tuple
    J: int
    L: int
    kind: str
    psi: np.ndarray
    phi: np.ndarray
    sigma: np.ndarray
    xi: np.ndarray
    theta: np.ndarray
    slant: float
    sigma_phi: float


def filter_bank(shape, J, L=8, *, kind="morlet", sigma0=SIGMA0, xi0=XI0, slant=None) -> FilterBank:
    r"""The filter bank of the 2-D scattering transform: J scales, L orientations, and the low-pass phi_J.

    Parameters
    ----------
    shape : (M, N)
        Grid size (any sides >= 1; the scattering transform asks for more, see
        :class:`shallow.cnn.scattering.Scattering2D`).
    J : int >= 1
        Number of scales; phi_J averages over about 2^J pixels.
    L : int >= 1
        Number of orientations on the half circle.
    kind : {"morlet", "gabor"}
        Morlet wavelets (zero mean: admissible) or plain Gabor functions (psi_hat(0) > 0).
    sigma0, xi0 : float
        Scale and frequency at j = 0 (Kymatio's 0.8 and 3 pi / 4).
    slant : float, optional
        Aspect ratio of the envelopes (default 4 / L).

    Returns
    -------
    FilterBank
        psi_{j, l} with sigma = sigma0 2^j, xi = xi0 2^{-j}, theta_l (:func:`orientations`);
        phi_J the Gaussian of scale sigma0 2^{J - 1} and slant 1 (module notes).

    Examples
    --------
    >>> bank = filter_bank((32, 32), J=2, L=4)
    >>> bank.psi.shape, bank.phi.shape
    ((2, 4, 32, 32), (32, 32))
    """
    shape = check_grid_shape(shape)
    J = check_integer(J, "J", minimum=1)
    L = check_integer(L, "L", minimum=1)
    if kind not in ("morlet", "gabor"):
        raise ValueError(f"kind must be 'morlet' or 'gabor', got {kind!r}")
    sigma0 = check_positive(sigma0, "sigma0")
    xi0 = _check_real(xi0, "xi0")
    slant = 4.0 / L if slant is None else check_positive(slant, "slant")
    make = morlet_2d if kind == "morlet" else gabor_2d
    theta = orientations(L)
    sigma = sigma0 * 2.0 ** np.arange(J)
    xi = xi0 * 2.0 ** -np.arange(J)
    psi = np.stack([np.stack([make(shape, sigma[j], theta[l], xi[j], slant) for l in range(L)])
                    for j in range(J)])  # (J, L, M, N)
    sigma_phi = sigma0 * 2.0 ** (J - 1)
    phi = gabor_2d(shape, sigma_phi, 0.0, 0.0, 1.0)  # (M, N)
    return FilterBank(shape, J, L, kind, psi, phi, sigma, xi, theta, slant, sigma_phi)


def _image_exponents(x):
    """e of shape x.shape[:-2]: 2^-e x has its largest modulus in [1, 2) in each image (..., M, N), e = 0 for
    a zero image. Scaling an image by 2^-e and its (linear or 1-homogeneous) transform back by 2^e is exact
    and 2^e is a float of x's dtype; the DFT's sums of M N pixels then stay in range."""
    xp = get_xp(x)
    m = xp.abs(x).max(axis=(-2, -1))
    return xp.where(m > 0, xp.frexp(m)[1] - 1, 0)


def _reflect(F):
    """F[-k] on the FFT grid (index -k mod M along both axes)."""
    return np.roll(F[..., ::-1, ::-1], 1, axis=(-2, -1))


def _check_bank(bank) -> FilterBank:
    if not isinstance(bank, FilterBank):
        raise TypeError(f"bank must be a FilterBank (see filter_bank), got {type(bank).__name__}")
    return bank


def littlewood_paley(bank: FilterBank) -> np.ndarray:
    r"""The Littlewood-Paley function A[k] = |phi_hat[k]|^2 + (1/2) sum_{j, l} (|psi_hat_{j, l}[k]|^2 + |psi_hat_{j, l}[-k]|^2).

    Parameters
    ----------
    bank : FilterBank

    Returns
    -------
    A : float64 array of shape (M, N), on numpy's FFT grid.

    Notes
    -----
    For real x, ||Wx||^2 = (1 / MN) sum_k |x_hat[k]|^2 A[k] (module notes): the frame bounds of the
    wavelet transform are min A and max A (Mallat 2012, Eq. 2.9, with the half circle of
    orientations doubled by symmetry).
    """
    bank = _check_bank(bank)
    P = bank.psi.reshape(-1, *bank.shape) ** 2
    return bank.phi**2 + 0.5 * (P.sum(axis=0) + _reflect(P).sum(axis=0))


def frame_bounds(bank: FilterBank) -> tuple[float, float]:
    """(min A, max A) of :func:`littlewood_paley`: min A ||x||^2 <= ||Wx||^2 <= max A ||x||^2 for real x.

    Parameters
    ----------
    bank : FilterBank
        From :func:`filter_bank`.

    Returns
    -------
    (float, float)
        The lower and upper frame bounds, min A <= max A.

    Raises
    ------
    TypeError
        When ``bank`` is not a FilterBank.
    """
    A = littlewood_paley(bank)
    return float(A.min()), float(A.max())


def wavelet_transform(x, bank: FilterBank):
    r"""The wavelet transform Wx = (x * phi_J, (x * psi_{j, l})_{j, l}) of real images, periodic and not subsampled.

    Layout: images of shape (..., H, W) = (..., M, N), with no channel axis (unlike the channels-last
    batches (N, H, W, C) of the rest of :mod:`shallow.cnn`); the outputs keep the leading axes and put
    the scale and orientation axes (J, L) before the spatial ones. For a channels-last batch X, pass
    ``X.transpose(0, 3, 1, 2)`` (shape (N, C, H, W)); :class:`shallow.cnn.scattering.ScatteringLayer`
    is the channels-last wrapper of the scattering transform built on these filters.

    Parameters
    ----------
    x : array of shape (..., M, N)
        Real images (numpy or cupy), M x N the bank's grid, no channel axis.
    bank : FilterBank

    Returns
    -------
    low : real array of shape (..., M, N)
        x * phi_J (circular convolution).
    high : complex array of shape (..., J, L, M, N)
        x * psi_{j, l}.

    Notes
    -----
    Computed with FFTs: (x * f)[u] = IDFT(X[k] F[k])[u]. float32 images give complex64 results (float16
    images too, computed in float32).

    Examples
    --------
    >>> bank = filter_bank((16, 16), J=2, L=4)
    >>> low, high = wavelet_transform(np.ones((3, 16, 16)), bank)
    >>> bool(np.allclose(high, 0, atol=1e-12))  # zero-mean wavelets annihilate constants
    True
    """
    bank = _check_bank(bank)
    x = check_array(x, "x")  # real, finite; integers as float64
    xp = get_xp(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a real array of shape (..., M, N), got dtype {x.dtype} and shape {x.shape}")
    if x.ndim >= 3 and tuple(x.shape[-3:-1]) == tuple(bank.shape) and tuple(x.shape[-2:]) != tuple(bank.shape):
        raise ValueError(f"x has shape {tuple(x.shape)}, a channels-last batch (N, H, W, C) of "
                         f"{bank.shape[0]} x {bank.shape[1]} images, but wavelet_transform takes images of shape "
                         "(..., H, W): for channels-last batches pass x.transpose(0, 3, 1, 2)")
    if tuple(x.shape[-2:]) != tuple(bank.shape):
        raise ValueError(f"x has images of shape {tuple(x.shape[-2:])} but the filter bank is built for "
                         f"shape {tuple(bank.shape)}")
    dtype = np.promote_types(x.dtype, np.float32)  # float16 in float32, as numpy's FFTs compute it
    # each image scaled by a power of 2 to a largest modulus in [1, 2) (exact; W is linear): the DFT's
    # sums overflowed for float32 pixels beyond 1e35 (float64 1e305)
    e = _image_exponents(x)[..., None, None]
    scale = xp.ldexp(xp.ones((), dtype=dtype), e)  # 2^e, (..., 1, 1)
    X = xp.fft.fft2(xp.ldexp(x, -e))
    phi = xp.asarray(bank.phi.astype(dtype))
    psi = xp.asarray(bank.psi.astype(dtype))
    low = xp.fft.ifft2(X * phi).real * scale
    high = xp.fft.ifft2(X[..., None, None, :, :] * psi) * scale[..., None, None, :, :]
    return low, high
