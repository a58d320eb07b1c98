# Copyright 2026 The mbrl_robot Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Replay buffers of the policy learners (MBPO, SAC): numpy ring buffers that feed SB3's SAC.

Why not SB3's ``ReplayBuffer``: model rollouts arrive as batches of thousands of rows, and the
real buffer must also hold the state, the goal and the executed (filtered) action that the
ensemble is trained on; two numpy ring buffers (:class:`ArrayBuffer`) mixed by ``real_ratio``
(:class:`MixedReplayBuffer`) do both and still feed SB3's ``SAC.train`` unchanged.

Not to be confused with :mod:`mbrl_robot.core.buffer.storage`, the crash-safe store of the
robot's real transitions.
"""

from typing import Dict, List, Optional

import numpy as np
import torch


class ArrayBuffer:
    """FIFO ring buffer of named float32 columns, with batched ``add`` and uniform ``sample``.

    Args:
        capacity: rows kept (oldest overwritten first).
        dims: column name -> row width (0 for a scalar column).
    """

    def __init__(self, capacity: int, dims: Dict[str, int]):
        if capacity < 1:
            raise ValueError(f'ArrayBuffer: capacity must be >= 1, got {capacity}')
        self.capacity = int(capacity)
        self.data = {k: np.zeros((capacity,) + ((d,) if d else ()), dtype=np.float32)
                     for k, d in dims.items()}
        self.size = 0
        self.added = 0  # rows ever added, overwritten ones included
        self._pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **rows: np.ndarray) -> None:
        """Append N rows: every column as an (N, d) or (N,) array."""
        if set(rows) != set(self.data):
            raise ValueError(f'ArrayBuffer.add: columns {sorted(rows)} != {sorted(self.data)}')
        n = len(next(iter(rows.values())))
        self.added += n
        if n > self.capacity:
            rows = {k: v[-self.capacity:] for k, v in rows.items()}
            n = self.capacity
        idx = (self._pos + np.arange(n)) % self.capacity
        for k, v in rows.items():
            v = np.asarray(v, dtype=np.float32)
            if len(v) != n:
                raise ValueError(f'ArrayBuffer.add: column {k} has {len(v)} rows, not {n}')
            self.data[k][idx] = v.reshape(self.data[k][idx].shape)
        self._pos = (self._pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """``n`` rows drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError('ArrayBuffer.sample: buffer is empty')
        idx = rng.integers(0, self.size, n)
        return {k: v[idx] for k, v in self.data.items()}

    def column(self, name: str) -> np.ndarray:
        """All stored rows of one column (oldest-first order is not guaranteed)."""
        return self.data[name][:self.size]


SAC_COLUMNS = ('obs', 'act', 'reward', 'next_obs', 'done')


class MixedReplayBuffer:
    """What SB3's ``SAC.train`` samples from: ``real_ratio`` real rows, the rest model rows.

    Args:
        real: buffer with the SAC columns (``obs``, ``act``, ``reward``, ``next_obs``, ``done``).
        model: the same columns from model rollouts, or None (model-free: all rows real).
        real_ratio: share of real rows per minibatch in (0, 1]; all real while ``model`` is
            empty.
        seed: minibatch RNG seed.
        relabelled: real rows with a hindsight goal (the SAC columns, and ``state`` and
            ``goal`` where MBPO's rollouts branch), or None. The real share of a minibatch
            is drawn from ``real`` and ``relabelled`` together, each row equally likely (k
            relabelled copies per real row: k / (k + 1) of it relabelled, HER's ``future``
            ratio).
    """

    def __init__(self, real: ArrayBuffer, model: Optional[ArrayBuffer], real_ratio: float,
                 seed: int = 0, relabelled: Optional[ArrayBuffer] = None):
        if not 0.0 < real_ratio <= 1.0:
            raise ValueError(f'real_ratio must be in (0, 1], got {real_ratio}')
        self.real, self.model, self.real_ratio = real, model, float(real_ratio)
        self.relabelled = relabelled
        self.rng = np.random.default_rng(seed)

    def sample_real(self, n: int) -> List[Dict[str, np.ndarray]]:
        """``n`` rows of a minibatch's real share, as parts (each a dict of columns): every
        stored row of ``real`` and ``relabelled`` equally likely."""
        n_rel = 0
        if self.relabelled is not None and len(self.relabelled) > 0:
            total = len(self.real) + len(self.relabelled)
            n_rel = int(self.rng.binomial(n, len(self.relabelled) / total))
        parts = [self.real.sample(n - n_rel, self.rng)] if n > n_rel else []
        if n_rel:
            parts.append(self.relabelled.sample(n_rel, self.rng))
        return parts

    def sample(self, batch_size: int, env=None):
        """A ``ReplayBufferSamples`` of ``batch_size`` rows (``env`` is SB3's, unused)."""
        from stable_baselines3.common.type_aliases import ReplayBufferSamples
        n_real = batch_size
        if self.model is not None and len(self.model) > 0:
            n_real = int(round(batch_size * self.real_ratio))
        parts = self.sample_real(n_real) if n_real else []
        if n_real < batch_size:
            parts.append(self.model.sample(batch_size - n_real, self.rng))

        def col(k: str) -> torch.Tensor:
            x = np.concatenate([p[k] for p in parts])
            return torch.as_tensor(x.reshape(batch_size, -1))
        return ReplayBufferSamples(col('obs'), col('act'), col('next_obs'), col('done'),
                                   col('reward'))
