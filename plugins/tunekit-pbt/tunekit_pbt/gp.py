"""The Gaussian process behind PB2's explore step, with numpy and scipy only.

The kernel is the time-varying squared exponential of the TV-GP-UCB bandit
(Bogunovic et al. 2016): the first input column is time, and the covariance of
two points decays with their distance in time as ``(1 - epsilon) ** (|dt| / 2)``
times a squared-exponential kernel over the remaining columns. Its variance,
lengthscale and epsilon are fitted by maximising the log marginal likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

# (variance, lengthscale, epsilon): initial values and bounds of the kernel's hyperparameters
_INITIAL = (1.0, 1.0, 0.1)
_BOUNDS = ((1e-5, 1e5), (1e-5, 1e5), (1e-5, 0.5))
_JITTERS = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2)


def tv_squared_exp(
    a: np.ndarray, b: np.ndarray, variance: float, lengthscale: float, epsilon: float
) -> np.ndarray:
    """The kernel matrix between the rows of ``a`` and ``b`` (time in column 0)."""
    epsilon = min(max(epsilon, 1e-5), 0.5)
    dt = np.abs(a[:, :1] - b[:, :1].T)
    sq = _sq_dists(a[:, 1:], b[:, 1:])
    return variance * np.exp(-sq / lengthscale) * (1.0 - epsilon) ** (0.5 * dt)


def _cholesky(K: np.ndarray, jitter: float) -> np.ndarray:
    return np.linalg.cholesky(K + jitter * np.eye(K.shape[0]))


def _lower_inverse(L: np.ndarray) -> np.ndarray:
    # numpy's solver: small solves stay fast where threaded LAPACK calls stall on few cores
    return np.linalg.solve(L, np.eye(L.shape[0]))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


class TimeVaryingGP:
    """A zero-mean GP regression with the time-varying kernel, fitted on ``(X, y)``."""

    def __init__(self, X: np.ndarray, y: np.ndarray, optimize: bool = True):
        self.X = np.asarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float).reshape(-1)
        self.theta = np.log(np.array(_INITIAL))
        self._dt = np.abs(self.X[:, :1] - self.X[:, :1].T)
        self._sq = _sq_dists(self.X[:, 1:], self.X[:, 1:])
        if optimize and len(self.y) > 0:
            self._optimize()
        self._factorize()

    @property
    def params(self) -> tuple[float, float, float]:
        variance, lengthscale, epsilon = np.exp(self.theta)
        return float(variance), float(lengthscale), float(epsilon)

    def _kernel_parts(self, theta: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        variance, lengthscale, epsilon = np.exp(theta)
        eps = min(max(epsilon, 1e-5), 0.5)
        K = variance * np.exp(-self._sq / lengthscale) * (1.0 - eps) ** (0.5 * self._dt)
        return K, variance, lengthscale, epsilon

    def _neg_lml(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Minus the log marginal likelihood and its gradient in log-parameters."""
        K, _, lengthscale, epsilon = self._kernel_parts(theta)
        n = len(self.y)
        try:
            L = _cholesky(K, _JITTERS[0])
        except np.linalg.LinAlgError:
            return 1e25, np.zeros(3)
        L_inv = _lower_inverse(L)
        K_inv = L_inv.T @ L_inv
        alpha = K_inv @ self.y
        lml = -0.5 * self.y @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * math.log(2 * math.pi)
        inner = np.outer(alpha, alpha) - K_inv
        grads = (
            K,  # d K / d log(variance)
            K * self._sq / lengthscale,  # d K / d log(lengthscale)
            -K * (0.5 * self._dt) * epsilon / (1.0 - epsilon),  # d K / d log(epsilon)
        )
        grad = np.array([0.5 * np.sum(inner * g) for g in grads])
        if not np.isfinite(lml):
            return 1e25, np.zeros(3)
        return -lml, -grad

    def log_marginal_likelihood(self) -> float:
        """The log marginal likelihood at the fitted hyperparameters."""
        return -self._neg_lml(self.theta)[0]

    def _optimize(self) -> None:
        bounds = np.log(np.array(_BOUNDS))
        result = minimize(self._neg_lml, self.theta, jac=True, method="L-BFGS-B", bounds=bounds)
        if np.all(np.isfinite(result.x)) and result.fun < self._neg_lml(self.theta)[0]:
            self.theta = result.x

    def _factorize(self) -> None:
        K, *_ = self._kernel_parts(self.theta)
        for jitter in _JITTERS:
            try:
                L = _cholesky(K, jitter)
                break
            except np.linalg.LinAlgError:
                continue
        else:  # pragma: no cover - the largest jitter makes any kernel matrix positive definite
            raise np.linalg.LinAlgError("PB2: the GP kernel matrix is not positive definite.")
        self._L_inv = _lower_inverse(L)
        self._alpha = self._L_inv.T @ (self._L_inv @ self.y)

    def predict(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance at the rows of ``Xs``."""
        Xs = np.atleast_2d(np.asarray(Xs, dtype=float))
        variance, lengthscale, epsilon = self.params
        Ks = tv_squared_exp(Xs, self.X, variance, lengthscale, epsilon)
        mean = Ks @ self._alpha
        v = self._L_inv @ Ks.T
        var = np.maximum(variance - (v * v).sum(0), 0.0)
        return mean, var


def normalize(data: np.ndarray, wrt: np.ndarray) -> np.ndarray:
    """Scale each column to [0, 1] by the min and max of ``wrt``'s column."""
    low = np.min(wrt, axis=0)
    high = np.max(wrt, axis=0)
    return (data - low) / (high - low + 1e-8)


def standardize(data: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, clipped to [-2, 2]."""
    data = (data - np.mean(data, axis=0)) / (np.std(data, axis=0) + 1e-8)
    return np.clip(data, -2, 2)


def ucb(model: TimeVaryingGP, model_var: TimeVaryingGP, x: np.ndarray, fixed: np.ndarray) -> float:
    """The GP-UCB value of hyperparameters ``x`` at the fixed (time, reward) point.

    The mean comes from ``model``; the exploration bonus is the variance of
    ``model_var``, which also holds the configs already chosen in this round (so
    their neighbourhood is less attractive). ``beta_t`` grows with the data size.
    """
    beta = 0.2 + max(0.0, math.log(0.4 * len(model.y)))
    kappa = math.sqrt(beta)
    point = np.concatenate([fixed, np.asarray(x, dtype=float)])[None, :]
    mean, _ = model.predict(point)
    _, var = model_var.predict(point)
    return float(mean[0] + kappa * var[0])


def optimize_acquisition(
    acquisition: Callable[[np.ndarray], float], dims: int, rng: np.random.Generator, starts: int = 10
) -> np.ndarray:
    """Maximise ``acquisition`` over [0, 1]^dims from ``starts`` random points (L-BFGS-B)."""
    best_value = -math.inf
    best_x = None
    bounds = [(0.0, 1.0)] * dims
    for _ in range(starts):
        x0 = rng.uniform(0.0, 1.0, dims)
        result = minimize(
            lambda x: -acquisition(x),
            x0,
            bounds=bounds,
            method="L-BFGS-B",
            options={"maxiter": 200, "maxfun": 200},
        )
        value = acquisition(result.x)
        if best_x is None or value > best_value:
            best_value, best_x = value, result.x
    return np.clip(best_x, 0.0, 1.0)


def select_length(X: np.ndarray, y: np.ndarray, bounds: np.ndarray, num_fixed: int) -> int:
    """How many of the latest data points to fit on.

    All of them below 200; otherwise the length, in steps of 10 from 200, whose GP
    has the highest log marginal likelihood.
    """
    min_len = 200
    n = X.shape[0]
    if n < min_len:
        return n
    scores = []
    lengths = list(range(min_len, n + 1, 10))
    for length in lengths:
        Xl, yl = X[-length:], y[-length:]
        Xn = _normalize_inputs(Xl, bounds, num_fixed)
        model = TimeVaryingGP(Xn, standardize(yl))
        scores.append(model.log_marginal_likelihood())
    return lengths[int(np.argmax(scores))]


def _normalize_inputs(X: np.ndarray, bounds: np.ndarray, num_fixed: int) -> np.ndarray:
    fixed = X[:, :num_fixed]
    limits = np.concatenate(
        [np.vstack([fixed.max(0), fixed.min(0)]), bounds], axis=1
    )
    return normalize(X, limits)


def select_config(
    X: np.ndarray,
    y: np.ndarray,
    current: np.ndarray | None,
    newpoint: np.ndarray,
    bounds: np.ndarray,
    num_fixed: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The hyperparameters (within ``bounds``) to continue with, by GP-UCB.

    ``X`` rows are ``[time, reward before, *hyperparameters]`` and ``y`` the reward
    change per unit of time that followed. ``newpoint`` is the (time, reward) of
    the checkpoint being continued from. ``current`` holds configs already chosen
    in this round (their rows get pseudo-observations so the variance there drops).
    ``bounds`` is a ``(2, d)`` array of lower and upper bounds.
    """
    length = select_length(X, y, bounds, num_fixed)
    X = X[-length:]
    y = y[-length:]
    fixed_old = X[:, :num_fixed]
    Xn = _normalize_inputs(X, bounds, num_fixed)
    yn = standardize(y)
    fixed = normalize(np.asarray(newpoint, dtype=float), fixed_old)
    model = TimeVaryingGP(Xn, yn)
    if current is None or len(current) == 0:
        model_var = model
    else:
        chosen = normalize(np.atleast_2d(np.asarray(current, dtype=float)), bounds)
        padded = np.hstack([np.tile(fixed, (chosen.shape[0], 1)), chosen])
        model_var = TimeVaryingGP(
            np.vstack([Xn, padded]), np.concatenate([yn, np.zeros(chosen.shape[0])])
        )
    dims = X.shape[1] - num_fixed
    best = optimize_acquisition(lambda x: ucb(model, model_var, x, fixed), dims, rng)
    low = np.min(bounds, axis=0)
    high = np.max(bounds, axis=0)
    return best * (high - low) + low
