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
"""Per-feature standardisation fitted on data, held in module buffers so it moves with ``.to``."""

from typing import Dict, List, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


class Normalizer(torch.nn.Module):
    """Standardises features to zero mean and unit variance: ``(x - mean) / std``.

    The statistics are buffers (part of ``state_dict`` and moved by ``.to(device)``); a fresh
    normaliser is the identity (mean 0, std 1). ``std`` is floored at ``min_std`` so constant
    features (a puck at rest, a locked joint) do not blow up.

    Args:
        size: number of features ``F``.
        min_std: floor for the fitted standard deviation.
    """

    def __init__(self, size: int, min_std: float = 1e-6):
        super().__init__()
        if size < 1:
            raise ValueError(f'Normalizer: size must be >= 1, got {size}')
        self.size = int(size)
        self.min_std = float(min_std)
        self.register_buffer('mean', torch.zeros(self.size))
        self.register_buffer('std', torch.ones(self.size))

    def fit(self, data: ArrayLike) -> None:
        """Fit mean and std on ``data`` of shape (N, F); N >= 1, finite values only."""
        x = torch.as_tensor(data, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.size:
            raise ValueError(f'Normalizer.fit: expected shape (N, {self.size}), '
                             f'got {tuple(x.shape)}')
        if x.shape[0] < 1:
            raise ValueError('Normalizer.fit: no rows')
        if not torch.isfinite(x).all():
            raise ValueError('Normalizer.fit: data contains NaN or inf')
        mean = x.mean(0)
        std = x.std(0, unbiased=False).clamp_min(self.min_std)
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) real units -> (..., F) standardised."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) standardised -> (..., F) real units."""
        return x * self.std + self.mean

    def to_dict(self) -> Dict[str, List[float]]:
        """JSON-friendly statistics ``{'mean': [...], 'std': [...]}``."""
        return {'mean': self.mean.detach().cpu().double().tolist(),
                'std': self.std.detach().cpu().double().tolist()}
