"""Freezing parts of a model: the documented way to train some layers and not others.

``model.freeze("backbone")`` turns the gradients of that submodule off and keeps it in inference
mode (batch-norm statistics and dropout fixed) whatever ``model.train()`` is later called with;
``model.unfreeze("backbone")`` gives back exactly the gradients it took (parameters that the
backbone's own config froze stay frozen). The 4-step alternating training uses it.
"""

from __future__ import annotations

from torch import nn


class Freezable(nn.Module):
    """An ``nn.Module`` whose named submodules can be frozen and unfrozen."""

    def __init__(self) -> None:
        super().__init__()
        # submodule name -> the parameters that were trainable when it was frozen
        self._frozen: dict[str, list[nn.Parameter]] = {}

    @property
    def frozen(self) -> tuple[str, ...]:
        return tuple(self._frozen)

    def freeze(self, *names: str) -> Freezable:
        for name in names:
            module = self.get_submodule(name)
            trainable = [p for p in module.parameters() if p.requires_grad]
            self._frozen.setdefault(name, []).extend(trainable)
            module.requires_grad_(False)
        return self.train(self.training)

    def unfreeze(self, *names: str) -> Freezable:
        for name in names:
            if name not in self._frozen:
                raise ValueError(f"{name!r} is not frozen (frozen: {list(self._frozen)})")
            for p in self._frozen.pop(name):
                p.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Freezable:
        super().train(mode)
        for name in self._frozen:  # frozen parts stay in inference mode
            self.get_submodule(name).train(False)
        return self
