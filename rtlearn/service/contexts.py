"""The bank of payload-context models. Every context has its own network (weights, base
optimiser state, normalisers); the learning-rate memories are shared by all of them and are
never swapped. Only the active context's model lives in the learner; the bank keeps the others.
"""

from __future__ import annotations


class ContextLimitError(RuntimeError):
    pass


class ContextBank:
    def __init__(self, initial: str, max_contexts: int):
        self.current = initial
        self.max_contexts = max_contexts
        self.parked: dict[str, dict] = {}  # name -> network_state of an inactive context
        self.last_evicted: str | None = None  # by the last switch

    @property
    def names(self) -> list[str]:
        return sorted({self.current, *self.parked})

    def switch(self, learner, name: str) -> str:
        """Make `name` active: 'restored' (its own model comes back: the paper's reload warm
        start), 'created' (it starts from the current model) or 'same'. A new context in a full
        bank evicts the least recently used idle one (`last_evicted`). Call with the learner
        idle."""
        self.last_evicted = None
        if name == self.current:
            return "same"
        if name not in self.parked and len(self.parked) + 2 > self.max_contexts:
            if not self.parked:
                raise ContextLimitError(f"context bank full ({self.max_contexts}); not creating {name!r}")
            # full: forget the least recently used idle context (parked first: dicts keep order)
            self.last_evicted = next(iter(self.parked))
            del self.parked[self.last_evicted]
        self.parked[self.current] = learner.network_state()
        self.current = name
        model = self.parked.pop(name, None)
        if model is None:
            return "created"
        learner.set_network_state(model)
        return "restored"

    def all_models(self, learner) -> dict[str, dict]:
        """Every context's model, the active one read from the learner."""
        return {**self.parked, self.current: learner.network_state()}

    def replace(self, models: dict[str, dict], current: str, learner) -> None:
        """Load a whole bank (snapshot restore)."""
        learner.set_network_state(models[current])
        self.current = current
        self.parked = {k: v for k, v in models.items() if k != current}

    def clear(self) -> None:
        self.parked.clear()
