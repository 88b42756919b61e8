"""A tiny observer: ``obj.events.NAME.connect(callback)``; callbacks get the new value.

Plain Python, so the viewer state works (and is tested) without Qt; the widgets subscribe to it like napari's
Qt layer subscribes to its models' event emitters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Emitter:
    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable[[Any], None]] = []
        self._blocked = 0

    def connect(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[[Any], None]) -> None:
        self._callbacks = [c for c in self._callbacks if c is not callback]

    def emit(self, value: Any = None) -> None:
        if self._blocked:
            return
        for cb in list(self._callbacks):
            cb(value)

    def __len__(self) -> int:
        return len(self._callbacks)


class EmitterGroup:
    """One :class:`Emitter` per name, created on first use."""

    def __init__(self, *names: str):
        self._emitters: dict[str, Emitter] = {n: Emitter(n) for n in names}

    def __getattr__(self, name: str) -> Emitter:
        if name.startswith("_"):
            raise AttributeError(name)
        em = self._emitters.get(name)
        if em is None:
            em = self._emitters[name] = Emitter(name)
        return em
