"""KV transfers from prefill to decode GPUs: latency plus size over bandwidth, queued per link."""

from __future__ import annotations

from sunsim.sim.environment import Environment
from sunsim.sim.stats import InterconnectStats


class Link:
    """A FIFO link: a transfer starts when the previous one on the link has finished.

    With FIFO service and durations known on entry, the queue is just the time the link
    frees up, so no process or resource object is needed per transfer.
    """

    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = 0.0


class Interconnect:
    """The links carrying prefilled KV to decode GPUs.

    ``contention`` says what a transfer queues behind: ``none`` (every transfer at full
    bandwidth), ``per_decode_worker`` (one link into each decode GPU) or ``per_link`` (one per
    prefill-decode pair).
    """

    __slots__ = ("env", "bandwidth_Bps", "latency_s", "contention", "kv_bytes_per_token", "_links")

    def __init__(self, env: Environment, bandwidth_Bps: float, latency_s: float, contention: str,
                 kv_bytes_per_token: int) -> None:
        self.env = env
        self.bandwidth_Bps, self.latency_s = bandwidth_Bps, latency_s
        self.contention = contention
        self.kv_bytes_per_token = kv_bytes_per_token
        self._links: dict[object, Link] = {}

    def duration(self, tokens: int) -> float:
        """Seconds to move ``tokens`` of KV over an idle link."""
        return self.latency_s + tokens * self.kv_bytes_per_token / self.bandwidth_Bps

    def transfer(self, tokens: int, src: int, dst: int, start_s: float) -> float:
        """Move ``tokens`` of KV from prefill worker ``src`` to decode worker ``dst``, starting at ``start_s``
        (now, or the decode GPU's next iteration boundary when it admitted the request ahead of it); returns the
        time the KV is in the decode GPU's memory.

        No event marks the end: the decode GPU takes the time into its own clock, and the prefill GPU frees its
        copy then (:meth:`~sunsim.sim.prefill.PrefillWorker.release_at`). Only the decode GPU starts transfers
        into itself, in time order, so its link's queue is the same as if each were started at ``start_s``.
        The time is the one a timer set now for it would fire at (``now + (end - now)``, rounded as SimPy does).
        """
        now = self.env.now
        begin = now if start_s < now else start_s
        dur = self.duration(tokens)
        if self.contention == "none":
            end = begin + dur
        else:
            key = dst if self.contention == "per_decode_worker" else (src, dst)
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = Link()
            end = (begin if begin > link.free_at else link.free_at) + dur
            link.free_at = end
        return now + (end - now)

    def stats(self) -> InterconnectStats:
        """The link model and how many links carried traffic, as a plain record."""
        return InterconnectStats(self.bandwidth_Bps, self.latency_s, self.kv_bytes_per_token, self.contention,
                                 len(self._links))
