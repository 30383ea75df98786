"""Aioli (Chen et al. 2024): online data-mixing proportions from a linear mixing law
(DESIGN.md 4, `aioli`).

The law: training on mixture p for one round changes group i's loss by
-sum_j A_ij p_j. Each round, LearnParams estimates A from short trainings on
smoothed one-hot mixtures, and UpdateProportions moves p by exponentiated gradient
toward the groups whose data lowers the losses most. A `Trainer` is anything that
can train on a mixture for some steps and report per-group validation losses: the
proxy LM (models/proxy_lm.py), or a simulated law in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class Trainer(Protocol):
    groups: list[str]

    def train(self, p: np.ndarray, steps: int) -> None: ...

    def losses(self) -> np.ndarray: ...  # per-group validation loss, shape (m,)


@dataclass(frozen=True)
class AioliSettings:
    """The paper's settings (SlimPajama, m=7): 40k steps in rounds of 200, lp_rounds 2,
    lp_steps 10, ohf 0.75, eta 1, gamma 0.1."""

    total_steps: int = 2000
    round_steps: int = 200
    lp_rounds: int = 2
    lp_steps: int = 10
    ohf: float = 0.75
    eta: float = 1.0
    gamma: float | None = 0.1  # EMA of A; None: plain exponentiated gradient
    prior: tuple[float, ...] | None = None  # the restricted setting: train on it first
    prior_steps: int = 0
    seed: int = 0

    def check(self, m: int) -> None:
        if m < 2:
            raise ValueError(f"Aioli needs at least 2 groups, got {m}")
        if not 0 < self.ohf <= 1:
            raise ValueError(f"ohf must be in (0, 1], got {self.ohf}")
        if self.round_steps <= self.lp_rounds * m * self.lp_steps:
            raise ValueError(f"a round ({self.round_steps} steps) must be longer than "
                             f"LearnParams ({self.lp_rounds} x {m} groups x {self.lp_steps})")
        if self.prior is not None and len(self.prior) != m:
            raise ValueError(f"prior has {len(self.prior)} proportions for {m} groups")


@dataclass
class AioliTrace:
    groups: list[str]
    p: list[list[float]] = field(default_factory=list)  # per round, before training on it
    A: list[list[list[float]]] = field(default_factory=list)  # per round, normalized
    losses: list[list[float]] = field(default_factory=list)  # per round, after it
    steps: int = 0

    @property
    def final_p(self) -> list[float]:
        return self.p[-1]


def smoothed_one_hot(m: int, ohf: float) -> np.ndarray:
    """Row j: weight ohf on group j and (1 - ohf)/(m - 1) on each other group."""
    P = np.full((m, m), (1 - ohf) / (m - 1))
    np.fill_diagonal(P, ohf)
    return P


def learn_params(trainer: Trainer, m: int, s: AioliSettings, rng: np.random.Generator
                 ) -> tuple[np.ndarray, int]:
    """(A normalized, steps used): B[:, j] is the average drop in every group's loss
    over lp_steps of training on q_j; then B[i] = P A[i] is solved row by row."""
    P = smoothed_one_hot(m, s.ohf)
    B = np.zeros((m, m))
    steps = 0
    for _ in range(s.lp_rounds):
        for j in rng.permutation(m):
            before = trainer.losses()
            trainer.train(P[j], s.lp_steps)
            B[:, j] += before - trainer.losses()
            steps += s.lp_steps
    B /= s.lp_rounds
    # B[i, j] = sum_k P[j, k] A[i, k]  =>  B[i] = P A[i]  (row j of P is q_j)
    A = np.linalg.solve(P, B.T).T
    if A.min() < 0:
        A = A - A.min()
    total = A.sum()
    return (A / total if total > 0 else np.full((m, m), 1 / m**2)), steps


def run_aioli(trainer: Trainer, settings: AioliSettings, log=None) -> AioliTrace:
    m = len(trainer.groups)
    settings.check(m)
    rng = np.random.default_rng(settings.seed)
    trace = AioliTrace(groups=list(trainer.groups))
    budget = settings.total_steps
    if settings.prior is not None and settings.prior_steps:
        prior = np.asarray(settings.prior, float) / sum(settings.prior)
        trainer.train(prior, settings.prior_steps)
        budget -= settings.prior_steps
        p = prior
    else:
        p = np.full(m, 1 / m)
    A_bar = None
    while budget > 0:
        A, used = learn_params(trainer, m, settings, rng)
        if settings.gamma is None:
            p = p * np.exp(settings.eta * A.sum(axis=0))
        else:
            A_bar = A if A_bar is None else (1 - settings.gamma) * A + settings.gamma * A_bar
            p = np.exp(settings.eta * A_bar.sum(axis=0))
        p = p / p.sum()
        rest = min(settings.round_steps, budget) - used
        if rest > 0:
            trainer.train(p, rest)
        budget -= max(used, 0) + max(rest, 0)
        trace.p.append(p.tolist())
        trace.A.append(A.tolist())
        trace.losses.append(trainer.losses().tolist())
        trace.steps = settings.total_steps - max(budget, 0)
        if log:
            log(len(trace.p), p, trace.losses[-1])
    return trace


def run_fixed(trainer: Trainer, p: np.ndarray, settings: AioliSettings) -> AioliTrace:
    """A baseline in the same code path: train on a fixed mixture for the whole budget
    (uniform p is the paper's stratified baseline)."""
    trace = AioliTrace(groups=list(trainer.groups))
    p = np.asarray(p, float) / np.sum(p)
    done = 0
    while done < settings.total_steps:
        steps = min(settings.round_steps, settings.total_steps - done)
        trainer.train(p, steps)
        done += steps
        trace.p.append(p.tolist())
        trace.losses.append(trainer.losses().tolist())
    trace.steps = done
    return trace
