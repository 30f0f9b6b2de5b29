"""Per-window skill ratings from the ranking of s_i, with OpenSkill's Plackett–Luce model.

Ratings are plain (mu, sigma) pairs so they serialise to SQLite and JSON; the openskill objects exist only
inside `update`. A newcomer starts at the model's default (mu=25, sigma=25/3, ordinal mu−3σ = 0) and has to
win rankings to get a positive ordinal, which is what makes a fresh Sybil identity worth little."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from openskill.models import PlackettLuce

ORDINAL_Z = 3.0


@dataclass(frozen=True)
class Rating:
    mu: float
    sigma: float

    @property
    def ordinal(self) -> float:
        """Conservative skill estimate mu − z·σ (openskill's `ordinal` with its default z=3)."""
        return self.mu - ORDINAL_Z * self.sigma


class RatingModel(Protocol):
    """Swappable rating step: new ratings for the trainers of one window from their scores."""

    name: str

    def default(self) -> Rating: ...

    def update(self, ratings: Mapping[str, Rating], scores: Mapping[str, float]) -> dict[str, Rating]: ...


class PlackettLuceRater:
    """OpenSkill Plackett–Luce: one match per window, each contribution a one-player team, higher s_i wins."""

    name = "openskill.PlackettLuce"

    def __init__(self, mu: float = 25.0, sigma: float = 25.0 / 3.0, beta: float = 25.0 / 6.0,
                 tau: float = 25.0 / 300.0) -> None:
        self.config = {"mu": mu, "sigma": sigma, "beta": beta, "tau": tau}
        self._model = PlackettLuce(mu=mu, sigma=sigma, beta=beta, tau=tau)

    def default(self) -> Rating:
        return Rating(mu=self._model.mu, sigma=self._model.sigma)

    def update(self, ratings: Mapping[str, Rating], scores: Mapping[str, float]) -> dict[str, Rating]:
        """Ratings after this window's match for every trainer in `scores` (absent from `ratings` → default).

        Players are ordered by address so the result never depends on dict order. A window with fewer than
        two scored trainers is no match: their ratings are returned unchanged."""
        players = sorted(scores)
        current = {t: ratings.get(t, self.default()) for t in players}
        if len(players) < 2:
            return current
        teams = [[self._model.rating(mu=current[t].mu, sigma=current[t].sigma, name=t)] for t in players]
        rated = self._model.rate(teams, scores=[float(scores[t]) for t in players])
        return {t: Rating(mu=float(team[0].mu), sigma=float(team[0].sigma)) for t, team in
                zip(players, rated, strict=True)}
