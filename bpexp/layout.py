"""How a grid's run axis is cut into chunks that are rectangles of the grid (the streamed
store's and the sweep engine's unit of work)."""

from __future__ import annotations

import numpy as np


class Layout:
    """How a grid's run axis is cut into chunks that are rectangles of the grid.

    The grid is the row-major product of ``axes`` (e.g. lr x seed). A chunk holds every value
    of the axes after ``split``, a block of ``block`` values of axis ``split`` and one value
    of each axis before it, so that every chunk is one Zarr chunk of every metric: a process
    writes whole Zarr chunks only, and shards never write the same file."""

    def __init__(self, axes: dict, split: int, block: int):
        self.axes = {k: np.asarray(v) for k, v in axes.items()}
        self.names = tuple(self.axes)
        self.shape = tuple(len(v) for v in self.axes.values())
        self.split, self.block = int(split), int(block)
        self.inner = int(np.prod(self.shape[self.split + 1:], dtype=np.int64))
        self.per_axis = -(-self.shape[self.split] // self.block)   # blocks along the split axis
        self.n_chunks = int(np.prod(self.shape[:self.split], dtype=np.int64)) * self.per_axis
        self.runs_per_chunk = self.block * self.inner

    @classmethod
    def for_chunk(cls, axes: dict, chunk: int) -> Layout:
        """The layout whose chunks hold at most ``chunk`` runs (at least one value of the last
        axis), balanced so that the blocks along the split axis are as equal as possible."""
        shape = [len(v) for v in axes.values()]
        inner, split = 1, 0
        for j in range(len(shape) - 1, -1, -1):
            if inner * shape[j] > chunk:
                split = j
                break
            inner *= shape[j]
        else:
            return cls(axes, 0, shape[0])                     # the whole grid is one chunk
        block = max(1, chunk // inner)
        n_blocks = -(-shape[split] // block)
        return cls(axes, split, -(-shape[split] // n_blocks))

    def chunk_shape(self) -> tuple:
        """Zarr chunk shape over the grid axes."""
        return tuple(1 if j < self.split else self.block if j == self.split else s
                     for j, s in enumerate(self.shape))

    def region(self, i: int) -> tuple:
        """Chunk ``i`` as a tuple of slices over the grid axes."""
        outer, q = divmod(int(i), self.per_axis)
        lead = np.unravel_index(outer, self.shape[:self.split]) if self.split else ()
        lo = q * self.block
        return (tuple(slice(int(k), int(k) + 1) for k in lead)
                + (slice(lo, min(lo + self.block, self.shape[self.split])),)
                + tuple(slice(0, s) for s in self.shape[self.split + 1:]))

    def place(self, i: int, v) -> tuple[tuple, np.ndarray]:
        """(region, values): chunk ``i``'s runs on the leading axis of ``v`` (padding
        dropped) reshaped onto the grid axes of its region."""
        region = self.region(i)
        shape = tuple(s.stop - s.start for s in region)
        v = np.asarray(v)[:int(np.prod(shape))]
        return region, v.reshape(shape + v.shape[1:])

    def size(self, i: int) -> int:
        """Runs in chunk ``i`` (fewer than runs_per_chunk in a last, partial block)."""
        return int(np.prod([s.stop - s.start for s in self.region(i)]))

    def runs(self, i: int) -> np.ndarray:
        """Flat (row-major) indices of the runs of chunk ``i``, in the chunk's own order."""
        idx = np.meshgrid(*[np.arange(s.start, s.stop) for s in self.region(i)], indexing="ij")
        return np.ravel_multi_index([a.ravel() for a in idx], self.shape)

    def describe(self) -> dict:
        return {"axes": list(self.names), "shape": list(self.shape), "split": self.names[
            self.split], "block": self.block, "runs_per_chunk": self.runs_per_chunk,
            "n_chunks": self.n_chunks}

    @classmethod
    def from_description(cls, d: dict) -> Layout:
        """The layout a store records (its axes' values are positions: regions only)."""
        axes = {k: np.arange(n) for k, n in zip(d["axes"], d["shape"])}
        return cls(axes, list(d["axes"]).index(d["split"]), d["block"])
