"""The order of the line: tiers with weights, and fairness by cost.

With one tier and ``fifo`` (the defaults) the line is first come, first served,
and the backends keep their plain O(1) line. Otherwise each request is given a
sort key when it lines up, and the line is kept in key order:

- **Tiers** (weighted fair queueing with tags in time units). Each tier keeps
  the tag of its last request; a new one gets ``max(now, last tag of its tier)
  + u / weight``, where ``u`` is the expected time between two admissions (the
  recent mean time a request holds a slot, over the slots). A tier that is not
  backlogged starts at ``now``; while several are backlogged their tags advance
  at ``u / weight`` per request, so they share admissions in proportion to their
  weights and a low tier still moves. A tier of weight 0 is spaced by ``u``
  within its own band (``BAND_SEC`` later): strictly after every positive weight.
- **Fair by cost** (``fair``). Each client is charged the seconds its requests
  held a slot, decaying with a half-life of ``HALF_LIFE_SEC``; a new request's
  key is pushed back by its client's decayed usage over the slots. Keys only
  order the waiting, so without contention (a free slot, nobody waiting) a
  request is admitted at once, as in FIFO.
- **Front** (a request sent back to the line after it was admitted): the band
  ``-BAND_SEC``, ahead of everyone waiting, first-come first-served among those.

Keys are seconds: the local line uses ``time.monotonic()``, the shared line
Redis's own clock in microseconds (``backends.redis.scripts``, same rules).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

DEFAULT_TIER = "guest"
FIFO, FAIR = "fifo", "fair"
FAIRNESS_MODES = (FIFO, FAIR)
#: Half-life of a client's charged usage: the use of a minute ago counts half.
HALF_LIFE_SEC = 60.0
#: The seconds one request is guessed to hold a slot before any has ended.
FIRST_GUESS_SEC = 2.0
#: Requests whose slot times make up the mean ``u`` is taken from.
SERVICE_WINDOW = 50
#: The offset between bands: 2**52 µs (about 142 years) is beyond any tag, and keeps
#: Redis's scores (doubles) exact to the microsecond.
BAND_SEC = 2**52 / 1e6
#: A waiting request's key in the local line: (band, seconds, arrival number).
Key = tuple[int, float, int]
#: Bands: requests sent back to the front, positive-weight tiers, weight-0 tiers.
FRONT, NORMAL, LAST = -1, 0, 1


def decayed(usage: float, since: float, now: float, half_life: float) -> float:
    """``usage`` charged at ``since``, as it counts at ``now``."""
    if usage <= 0.0:
        return 0.0
    return float(usage * 0.5 ** (max(0.0, now - since) / half_life))


class Ordering:
    """How the line is ordered: the tiers' weights, FIFO or fair, and the pace ``u``."""

    def __init__(
        self,
        tiers: Mapping[str, float] | None = None,
        fairness: str = FIFO,
        slots: int = 1,
        half_life_sec: float = HALF_LIFE_SEC,
    ) -> None:
        self.tiers = {str(k): float(v) for k, v in (tiers or {DEFAULT_TIER: 1.0}).items()}
        self.fair = fairness == FAIR
        self.slots = max(1, slots)
        self.half_life_sec = half_life_sec
        #: One tier, first come first served: the backends' plain O(1) line.
        self.plain = len(self.tiers) <= 1 and not self.fair
        self._held: deque[float] = deque(maxlen=SERVICE_WINDOW)
        self._held_sum = 0.0

    def tier(self, name: str) -> str:
        """The tier a request is ordered in: its own if known, else the default one."""
        return name if name in self.tiers else DEFAULT_TIER

    def weight(self, tier: str) -> float:
        return self.tiers.get(tier, self.tiers.get(DEFAULT_TIER, 1.0))

    def interval(self) -> float:
        """``u``: the expected seconds between two admissions."""
        held = self._held_sum / len(self._held) if self._held else FIRST_GUESS_SEC
        return held / self.slots

    def spacing(self, tier: str) -> tuple[float, int]:
        """How far apart the tier's successive tags are (seconds), and its band."""
        weight = self.weight(tier)
        if weight <= 0:
            return self.interval(), LAST
        return self.interval() / weight, NORMAL

    def served(self, seconds: float) -> None:
        """A request held a slot this long (it feeds ``u``)."""
        if len(self._held) == self._held.maxlen:
            self._held_sum -= self._held[0]
        self._held.append(seconds)
        self._held_sum += seconds


class LineKeys:
    """The sort keys of this process's own line (``local``): tier tags, clients' usage."""

    def __init__(self, ordering: Ordering) -> None:
        self.ordering = ordering
        self._tags: dict[str, float] = {}
        #: Client -> (usage in slot seconds, when last charged).
        self._usage: dict[str, tuple[float, float]] = {}
        self._kept = 64
        self._seq = 0
        #: Tier -> (arrival number, the tier's tag before it): the latest tag given, which
        #: ``withdraw`` takes back if that request leaves while still waiting.
        self._latest: dict[str, tuple[int, float | None]] = {}

    def key(self, tier: str, client: str, now: float, *, front: bool = False) -> Key:
        """A new waiting request's key: (band, seconds, arrival number); smallest first."""
        self._seq += 1
        if front:
            return (FRONT, now, self._seq)
        ordering = self.ordering
        tier = ordering.tier(tier)
        step, band = ordering.spacing(tier)
        previous = self._tags.get(tier)
        tag = max(now, previous or 0.0) + step
        self._tags[tier] = tag
        self._latest[tier] = (self._seq, previous)
        if ordering.fair and client:
            tag += self.usage(client, now) / ordering.slots
        return (band, tag, self._seq)

    def withdraw(self, tier: str, key: Key) -> None:
        """A request left the line before its turn: if it was its tier's latest, the tier's
        tag goes back to what it was (a request refused at the door, or cancelled at once,
        must not push its tier's later arrivals back)."""
        tier = self.ordering.tier(tier)
        latest = self._latest.get(tier)
        if latest is None or latest[0] != key[2]:
            return
        del self._latest[tier]
        if latest[1] is None:
            self._tags.pop(tier, None)
        else:
            self._tags[tier] = latest[1]

    def usage(self, client: str, now: float) -> float:
        """The client's decayed usage (slot seconds)."""
        usage, since = self._usage.get(client, (0.0, now))
        return decayed(usage, since, now, self.ordering.half_life_sec)

    def charge(self, client: str, seconds: float, now: float) -> None:
        """Charge the client for a slot held ``seconds`` (fair only)."""
        if not client or not self.ordering.fair:
            return
        self._usage[client] = (self.usage(client, now) + seconds, now)
        if len(self._usage) > 2 * self._kept:
            # Forget clients whose use no longer counts (under a millisecond).
            half_life = self.ordering.half_life_sec
            self._usage = {
                c: (u, t)
                for c, (u, t) in self._usage.items()
                if decayed(u, t, now, half_life) > 1e-3
            }
            self._kept = max(64, len(self._usage))
