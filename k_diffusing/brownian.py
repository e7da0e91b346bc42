"""torchsde's Brownian tree, the same path bit for bit, with each split's Gaussian drawn once.

``torchsde.BrownianTree`` (Li et al. 2020, "Scalable Gradients for Stochastic Differential Equations", arXiv
2001.01328, Sec. 4; torchsde 0.2's ``BrownianInterval`` with ``halfway_tree=True``) is the noise of k-diffusion's and
ComfyUI's SDE samplers. Its path over ``[t0, t1]`` is fixed by the entropy alone:

- the root's increment is ``W = N(seed_W) sqrt(t1 - t0)``, its seeds the first 3 words of
  ``numpy.random.SeedSequence(entropy, pool_size=24)``;
- every node ``[s, u]`` splits at its rounded halfway point ``m = round((s + u) / 2, 6)``; with the node's seeds from
  ``SeedSequence(entropy, spawn_key=(key, depth), pool_size=24)`` (the root's key and depth 0; a child's key is
  ``2 key + (0 left, 1 right)``), the Brownian bridge gives the left child ``W_l = (m - s) W / (u - s)
  + sqrt((m - s)(u - m) / (u - s)) N(seed_W)`` and the right child ``W_r = W - W_l``;
- a query ``[a, b]`` (rounded to 6 digits) is the sum, left to right, of the nodes that split it canonically: a node
  equal to it, else its left child's part and its right child's part.

torchsde computes each child from its parent separately, so both children of a split draw the same full-size
Gaussian, and its cache of 45 recent nodes drops nodes a later query needs again: about 54 full-size draws per query
of a descending schedule. Here a split computes both children from one draw, and the nodes of the last query are
kept for the next, which starts where it ended: 15-19 draws per query. Every value is formed by the same torch
operations on the same operands as torchsde's, so the increments equal torchsde's bit for bit. Both claims are
checked in ``tests/test_brownian_ahead.py``.

Gaussians come from torchsde's module function ``brownian_interval._randn(size, dtype, device, seed)``, looked up at
each draw, so a replacement installed there (the A1111 seed mode's Gaussian source) applies as it does to torchsde.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class _Node:
    """An interval of the tree; ``mid`` and the children exist once it has been split."""

    __slots__ = ("start", "end", "parent", "key", "depth", "mid", "seed", "left", "right")

    def __init__(self, start: float, end: float, parent: "_Node | None", key: int, depth: int):
        self.start, self.end, self.parent, self.key, self.depth = start, end, parent, key, depth
        self.mid = self.seed = self.left = self.right = None


class DyadicBrownianTree:
    """Increments ``W(b) - W(a)`` of torchsde's ``BrownianTree(t0, zeros(size), t1, entropy=entropy)``.

    Args:
        t0, t1: the interval (``t0 < t1``), as torchsde takes them.
        size, dtype, device: the increments' shape and type.
        entropy: the tree's seed.
        tol: query times and split points are rounded to ``-log10(tol)`` digits (torchsde's default 1e-6).
        pool_size: ``SeedSequence`` pool size (torchsde ``BrownianTree``'s 24).

    Memory: of the nodes the last query used (the two paths from the root to its ends, with the children of every
    split on them), those outside the queried interval are kept for the next query, the rest dropped: at most
    ``4 log2((t1 - t0) / tol)`` full-size tensors (96 for SDXL's sigma range, 80 for FLUX's); on a descending
    schedule 40 (FLUX) to 51 (SDXL) are kept between queries and 72-74 (FLUX) to 87-94 (SDXL) held during one
    (``tests/test_brownian_ahead.py``). The next query of a schedule starts where the last one ended, so it reuses
    one path.
    """

    def __init__(self, t0, t1, size, dtype=torch.float32, device="cpu", entropy: int = 0, tol: float = 1e-6,
                 pool_size: int = 24):
        t0, t1 = float(t0), float(t1)
        if not t0 < t1:
            raise ValueError(f"the tree's interval needs t0 < t1, got t0={t0!r}, t1={t1!r}")
        self.size, self.dtype, self.device = tuple(size), dtype, torch.device(device)
        self.entropy, self.pool_size = entropy, pool_size
        self.digits = -int(math.log10(tol))
        self.draws = 0  # full-size Gaussians drawn so far (the root's included)
        self.root = _Node(self._round(t0), self._round(t1), None, 0, 0)
        seed_w = np.random.SeedSequence(entropy=entropy, pool_size=pool_size).generate_state(3)[0]
        self.root_w = self._randn(seed_w) * math.sqrt(t1 - t0)
        self.cache: dict[_Node, torch.Tensor] = {}  # the last query's nodes
        self.used: dict[_Node, torch.Tensor] = {}  # the current query's

    def _round(self, t: float) -> float:
        return round(t, self.digits)

    def _randn(self, seed) -> torch.Tensor:
        from torchsde._brownian import brownian_interval  # looked up per draw: a replaced source applies

        self.draws += 1
        return brownian_interval._randn(self.size, self.dtype, self.device, seed)

    def _split(self, node: _Node) -> None:
        if node.mid is not None:
            return
        mid = 0.5 * (node.end + node.start)
        node.mid = self._round(mid)
        sequence = np.random.SeedSequence(entropy=self.entropy, spawn_key=(node.key, node.depth),
                                          pool_size=self.pool_size)
        node.seed = sequence.generate_state(4)[0]
        node.left = _Node(node.start, node.mid, node, 2 * node.key, node.depth + 1)
        node.right = _Node(node.mid, node.end, node, 2 * node.key + 1, node.depth + 1)

    def _w(self, node: _Node) -> torch.Tensor:
        """The node's increment: from this query's or the last query's nodes, else from its parent's by the Brownian
        bridge (both children from one draw)."""
        if node is self.root:
            return self.root_w
        if node in self.used:
            return self.used[node]
        if node in self.cache:
            self._use(node, self.cache[node])
            return self.used[node]
        parent = node.parent
        w = self._w(parent)
        h_reciprocal = 1 / (parent.end - parent.start)
        left_diff = parent.mid - parent.start
        right_diff = parent.end - parent.mid
        mean = left_diff * w * h_reciprocal
        var = left_diff * right_diff * h_reciprocal
        left_w = mean + math.sqrt(var) * self._randn(parent.seed)
        right_w = w - left_w
        self.used[parent.left], self.used[parent.right] = left_w, right_w
        return left_w if node is parent.left else right_w

    def _use(self, node: _Node, w: torch.Tensor) -> None:
        """Keep a cached node for this query, with its sibling (both came from one draw)."""
        self.used[node] = w
        sibling = node.parent.left if node is node.parent.right else node.parent.right
        if sibling in self.cache:
            self.used[sibling] = self.cache[sibling]

    def _cover(self, a: float, b: float) -> list[_Node]:
        """The nodes whose increments sum to ``[a, b]``, left to right (torchsde's ``_loc``)."""
        out, pending = [], [(self.root, a, b)]
        while pending:
            node, a, b = pending.pop()
            for _ in range(1100):  # a float64 interval halves at most ~1100 times; torchsde would recurse forever
                if a == node.start and b == node.end:
                    out.append(node)
                    break
                self._split(node)
                if b <= node.mid:
                    node = node.left
                elif a >= node.mid:
                    node = node.right
                else:
                    pending.append((node.right, node.mid, b))
                    node, b = node.left, node.mid
            else:
                raise RuntimeError(f"the query [{a!r}, {b!r}] does not resolve in the tree's {10**-self.digits} grid")
        return out

    def __call__(self, a, b) -> torch.Tensor:
        """``W(b) - W(a)`` for ``a <= b``; times outside the tree's (rounded) interval are moved onto its ends, as
        torchsde does (it also warns), and the rest is rounded to the tree's digits."""
        lo, hi = self.root.start, self.root.end
        a, b = min(max(float(a), lo), hi), min(max(float(b), lo), hi)
        if a > b:
            raise ValueError(f"a Brownian increment needs a <= b, got a={a!r}, b={b!r}")
        if a == b:
            return torch.zeros(self.size, dtype=self.dtype, device=self.device)
        a, b = self._round(a), self._round(b)
        nodes = self._cover(a, b)
        w = self._w(nodes[0])
        for node in nodes[1:]:
            w = w + self._w(node)
        # keep the paths to the query's ends and what hangs off them outside [a, b]: the next query of a schedule
        # starts at a or b and lies on the other side
        self.cache = {node: value for node, value in self.used.items() if not a <= node.start <= node.end <= b}
        self.used = {}
        return w
