"""Prefill GPUs shared by several task models: packed (MuxServe-style) or loaded on demand (ServerlessLLM,
Aegaeon style).

A shared GPU keeps one FCFS queue per model and batches one model's prompts at a time (the models'
prefill modules are different weights: a batch cannot mix them). The next batch is the model whose
oldest waiting request came first: a heap of the queues' heads keeps that choice O(log models)
whatever the number of models, so no per-model loop runs per request or per batch.

On demand, a GPU holds at most ``resident`` models' prefill modules (least recently used evicted,
as :class:`sunsim.costs.lora.AdapterCache` does for adapters). A batch of a model not resident first
waits for its load, ``weight bytes / load bandwidth``; the GPU computes nothing meanwhile (no
prefetch or overlap: the load's full cost, an upper bound on what overlapping loaders such as
ServerlessLLM's pipelined one pay), and requests arriving during the load join the batch.
GPUs start cold: nothing resident.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable

import numpy as np

from sunsim.costs.model import CostModel
from sunsim.sim.environment import Environment
from sunsim.sim.prefill import PrefillWorker
from sunsim.sim.records import Records
from sunsim.sim.stats import PrefillStats


class Holders:
    """The GPUs of an on-demand pool that hold each model (resident there, or queued there): what the router
    looks at first, so a pick never scans the models and scans the GPUs only for their loads."""

    def __init__(self) -> None:
        self.of: dict[int, dict[int, SharedPrefillWorker]] = {}  # model -> {wid: worker}, in insertion order

    def hold(self, model: int, worker: SharedPrefillWorker) -> None:
        self.of.setdefault(model, {})[worker.wid] = worker

    def drop(self, model: int, wid: int) -> None:
        self.of.get(model, {}).pop(wid, None)


class SharedPrefillWorker(PrefillWorker):
    """A prefill GPU serving several models: per-model FCFS queues, one model per batch.

    ``cache_size`` None: every model routed here is resident (a packed GPU). Otherwise at most
    ``cache_size`` models are, LRU, and a miss costs ``load_s`` seconds before the batch. An idle
    GPU starts at the end of the instant, when the requests arriving together are all queued.
    """

    starts_at_once = False
    __slots__ = ("_model", "_queues", "_heads", "_order", "_cache", "_cache_size", "load_s", "_holders", "loads",
                 "loading_s", "_load_end", "pending_loads", "_now_model")

    def __init__(self, env: Environment, wid: int, cost: CostModel, max_batch_tokens: int,
                 prompt: np.ndarray, model: np.ndarray, rec: Records, on_done: Callable[[int, int], None],
                 kv_capacity_tokens: int | None = None, cache_size: int | None = None, load_s: float = 0.0,
                 holders: Holders | None = None) -> None:
        self._model = model
        self._queues: dict[int, deque[tuple[int, int]]] = {}  # model -> (submit order, request), FCFS
        self._heads: list[tuple[int, int]] = []  # (submit order of the queue's head, model)
        self._order = 0
        self._cache: OrderedDict[int, None] | None = None if cache_size is None else OrderedDict()
        self._cache_size = cache_size or 0
        self.load_s = load_s
        self._holders = holders
        self.loads = 0
        self.loading_s = 0.0
        self._load_end = 0.0  # when the load started last ends (loading_s already counts all of it)
        #: models queued here whose prefill module is not resident: loads ahead of the queue (routing reads it)
        self.pending_loads = 0
        self._now_model = -1  # the model of the batch being started
        super().__init__(env, wid, cost, max_batch_tokens, prompt, rec, on_done, kv_capacity_tokens)

    def resident(self, model: int) -> bool:
        return self._cache is None or model in self._cache

    def _enqueue(self, rid: int) -> None:
        m = self._model[rid]
        queue = self._queues.get(m)
        if queue is None:
            queue = self._queues[m] = deque()
        if not queue:
            heapq.heappush(self._heads, (self._order, m))
            if not self.resident(m):
                self.pending_loads += 1
                if self._holders is not None:
                    self._holders.hold(m, self)
        queue.append((self._order, rid))
        self._order += 1

    def _make_resident(self, m: int) -> float:
        """Load ``m``'s prefill module (evicting the least recently used one when full); returns the load's
        seconds (0 when resident already)."""
        cache = self._cache
        if m in cache:
            cache.move_to_end(m)
            return 0.0
        self.pending_loads -= 1
        if len(cache) >= self._cache_size:
            victim, _ = cache.popitem(last=False)
            if self._queues.get(victim):  # still wanted here: it needs loading again
                self.pending_loads += 1
            elif self._holders is not None:
                self._holders.drop(victim, self.wid)
        cache[m] = None
        self.loads += 1
        if self.load_s > 0:
            self.loading_s += self.load_s
            self._load_end = self.env.now + self.load_s
        return self.load_s

    def _next(self, _ev: object = None) -> None:
        """The model whose oldest request came first is next: load it if needed, then start its batch."""
        if not self._heads:
            self._active = False
            return
        _, self._now_model = heapq.heappop(self._heads)
        if self._cache is not None and (load_s := self._make_resident(self._now_model)) > 0:
            self.env.call_later(load_s, lambda _ev: self._start())  # requests arriving meanwhile join
            return
        self._start()

    def _head(self) -> int:
        return self._prompt[self._queues[self._now_model][0][1]]

    def _take(self, room: int) -> tuple[list[int], list[int], int]:
        m, prompt = self._now_model, self._prompt
        queue = self._queues[m]
        batch = [queue.popleft()[1]]
        lengths = [prompt[batch[0]]]
        tokens = lengths[0]
        while queue and tokens + (length := prompt[queue[0][1]]) <= room:
            batch.append(queue.popleft()[1])
            lengths.append(length)
            tokens += length
        if queue:
            heapq.heappush(self._heads, (queue[0][0], m))
        return batch, lengths, tokens

    def stats(self) -> PrefillStats:
        """As :meth:`PrefillWorker.stats`, with the loads; a load still running at the stop counts up to it."""
        base = super().stats()
        loading = self.loading_s - max(0.0, self._load_end - self.env.now)
        return PrefillStats(base.wid, base.busy_s, base.batches, base.peak_held_tokens, base.stalled_s,
                            self.loads, loading)


class ResidencyRouter:
    """Routes an on-demand pool's requests: the GPU with the least estimated work ahead, where a GPU not
    holding the model adds one load. So a GPU holding the model is preferred (then the least loaded),
    until its queue is longer than a load takes, when the request goes where loading it is quicker.

    Work ahead is the GPU's outstanding prompt tokens x ``s_per_token`` (seconds per prompt token at full
    batches) plus its pending loads x ``load_s``. A pick takes the best of the GPUs holding the model at
    their work, and the best of all GPUs at their work plus a load (an overestimate only for holders, which
    the first pass priced exactly); a tie goes to a holder, then to the first GPU. No pass over the models.
    """

    def __init__(self, workers: list[SharedPrefillWorker], s_per_token: float, load_s: float,
                 holders: Holders) -> None:
        self.workers, self.s_per_token, self.load_s, self.holders = workers, s_per_token, load_s, holders

    def pick(self, model: int) -> SharedPrefillWorker:
        per_token, load_s = self.s_per_token, self.load_s
        best, best_cost = None, float("inf")
        for w in self.holders.of.get(model, {}).values():
            cost = w.kv_load * per_token + w.pending_loads * load_s
            if cost < best_cost or (cost == best_cost and w.wid < best.wid):
                best, best_cost = w, cost
        for w in self.workers:
            cost = w.kv_load * per_token + w.pending_loads * load_s + load_s
            if cost < best_cost:
                best, best_cost = w, cost
        return best
