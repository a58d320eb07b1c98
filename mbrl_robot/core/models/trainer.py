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
"""Fits a ``GaussianEnsemble`` on real transitions: bootstrap, minibatches, early stopping.

Kept apart from the model class as in mbrl-lib (``mbrl.models.ModelTrainer``).
"""

import copy
from dataclasses import dataclass, field
import math
import threading
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from mbrl_robot.core.models.ensemble import GaussianEnsemble
from mbrl_robot.core.types import TransitionBatch

EpochCallback = Callable[[int, float, float], None]


@dataclass
class TrainResult:
    """Outcome of ``ModelTrainer.fit``.

    Attributes:
        train_losses: mean training objective per epoch (NLL or MSE, normalised units).
        val_losses: mean over members of the validation score per epoch (MSE of the mean,
            normalised delta units).
        best_val_loss: mean validation score of the returned (best-per-member) weights.
        epochs: epochs run.
        stopped_early: True when the plateau rule stopped training before ``max_epochs``.
        elite_indices: the ``num_elites`` members with the lowest validation score.
        member_val_losses: (K,) validation score of each returned member.
        cancelled: True when ``stop_event`` ended the fit.
        n_train: rows used for training; n_val: rows held out for validation.
        members_improved: members whose validation score improved on the weights the fit
            started from; 0 means the model was returned exactly as it was before the call
            (weights, normalisers and elites).
    """

    train_losses: List[float] = field(default_factory=list)
    val_losses: List[float] = field(default_factory=list)
    best_val_loss: float = math.inf
    epochs: int = 0
    stopped_early: bool = False
    elite_indices: List[int] = field(default_factory=list)
    member_val_losses: List[float] = field(default_factory=list)
    cancelled: bool = False
    n_train: int = 0
    n_val: int = 0
    members_improved: int = 0


def validation_mask(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Which rows are held out for validation, decided by each row's stable id alone.

    A row is validation when a fixed 64-bit hash (splitmix64) of its id, mapped to [0, 1), is
    below ``fraction``. The split does not depend on the seed, on the other rows or on their
    order, so a transition is validation in every fit or in none: a warm-started model is never
    validated on rows it was trained on. The share of validation rows is ``fraction`` on
    average; when the hash puts no row (of a few) below ``fraction``, the row with the smallest
    hash is taken.

    Args:
        ids: (N,) distinct non-negative integer ids (e.g. sequence numbers, or row indices of
            an append-only dataset).
        fraction: target share in [0, 1); 0 holds nothing out.

    Returns:
        (N,) bool mask.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise ValueError(f'validation ids must be a 1-D array of non-negative ints, got '
                         f'dtype {ids.dtype}, shape {ids.shape}')
    if len(np.unique(ids)) != len(ids):
        raise ValueError('validation ids must be distinct')
    mask = np.zeros(len(ids), dtype=bool)
    if fraction <= 0.0 or len(ids) == 0:
        return mask
    z = ids.astype(np.uint64)
    with np.errstate(over='ignore'):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    mask = u < fraction
    if not mask.any():
        mask[int(np.argmin(u))] = True
    return mask


def count_nonfinite_rows(batch: TransitionBatch) -> int:
    """Number of rows whose obs, act or next_obs contain NaN or inf."""
    bad = np.zeros(len(batch), dtype=bool)
    for name in ('obs', 'act', 'next_obs'):
        x = np.asarray(getattr(batch, name), dtype=np.float64).reshape(len(batch), -1)
        bad |= ~np.isfinite(x).all(axis=1)
    return int(bad.sum())


class ModelTrainer:
    """Trains an ensemble with Adam on bootstrapped minibatches until validation plateaus.

    Each fit: validates the data, holds out about ``validation_fraction`` of the rows (chosen by
    a hash of each row's stable id, see :func:`validation_mask`: the same rows in every fit, so
    a warm-started model is scored on rows it never trained on), refits the model's normalisers
    on the training rows, draws one bootstrap index set
    per member (with replacement; without ``bootstrap`` every member sees all rows in its own
    order), then runs epochs of minibatch Adam. After each epoch every member's validation score
    (MSE of its mean on held-out rows, normalised delta units) is compared with its best so far;
    a member whose score improves by more than ``min_rel_improvement`` (relative) has its weights
    snapshotted. The starting score of each member is that of its current weights under the
    refitted normalisers. Once some member has improved, training stops after ``patience``
    epochs in which no member improved, or at ``max_epochs``; each member then gets back its
    best weights. Until then the fit is not judged: a warm-started probabilistic ensemble is
    typically overconfident (log-variances far below its errors on rows it did not fit), so
    its first epochs on new data raise the validation score before they lower it, and a fit
    stopped ``patience`` epochs in would hand back the old model again at every retrain, which
    never learns from the new data (InvertedPendulum-v5, seed 0: 40 fits in a row, docs/results/
    public_benchmarks.md). When no member improved by ``max_epochs``, the
    model is restored exactly as it was before the call (weights *and* the old normalisers,
    elites unchanged), never old weights under new normalisers;
    ``TrainResult.members_improved`` counts the improved members.

    Row ids: ``fit(batch, ids=...)`` takes one stable id per row (e.g. the buffer's sequence
    numbers); without ``ids`` the row index is the id, which is stable when the dataset is
    append-only (each fit passes all rows so far, in the order they were recorded).

    ``fit`` mutates the model in place. A node that serves predictions while training should fit
    a copy (``copy.deepcopy(model)``) and swap it in afterwards.

    Args:
        model: the ensemble to train.
        learning_rate: Adam step size.
        batch_size: rows per member per minibatch.
        validation_fraction: expected share of rows held out (chosen by id), in [0, 1). With 0
            the score is computed on the training rows (no early-stopping signal about
            generalisation).
        max_epochs: upper bound on epochs.
        patience: epochs without improvement before stopping (>= 1), counted once some member
            has improved on its starting score.
        bootstrap: per-member resampling with replacement.
        seed: seeds the bootstrap and the minibatch order (not the split).
        min_rel_improvement: relative decrease of a member's score that counts as improvement.
    """

    def __init__(self, model: GaussianEnsemble, learning_rate: float = 1e-3,
                 batch_size: int = 256, validation_fraction: float = 0.1, max_epochs: int = 200,
                 patience: int = 10, bootstrap: bool = True, seed: int = 0,
                 min_rel_improvement: float = 1e-3):
        if not isinstance(model, GaussianEnsemble):
            raise TypeError(f'ModelTrainer: model must be a GaussianEnsemble, got {type(model)}')
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0.0
                and math.isfinite(learning_rate)):
            raise ValueError(f'ModelTrainer: learning_rate must be > 0, got {learning_rate!r}')
        for name, value in (('batch_size', batch_size), ('max_epochs', max_epochs),
                            ('patience', patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'ModelTrainer: {name} must be an int >= 1, got {value!r}')
        if not (isinstance(validation_fraction, (int, float))
                and 0.0 <= validation_fraction < 1.0):
            raise ValueError(f'ModelTrainer: validation_fraction must be in [0, 1), '
                             f'got {validation_fraction!r}')
        if not isinstance(bootstrap, bool):
            raise ValueError(f'ModelTrainer: bootstrap must be a bool, got {bootstrap!r}')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'ModelTrainer: seed must be an int, got {seed!r}')
        if not (isinstance(min_rel_improvement, (int, float)) and min_rel_improvement >= 0.0):
            raise ValueError(f'ModelTrainer: min_rel_improvement must be >= 0, '
                             f'got {min_rel_improvement!r}')
        self.model = model
        self.learning_rate = float(learning_rate)
        self.batch_size = batch_size
        self.validation_fraction = float(validation_fraction)
        self.max_epochs = max_epochs
        self.patience = patience
        self.bootstrap = bootstrap
        self.seed = seed
        self.min_rel_improvement = float(min_rel_improvement)

    def _check_batch(self, batch: TransitionBatch) -> None:
        m = self.model
        n = len(batch)
        obs, act, next_obs = (np.asarray(x) for x in (batch.obs, batch.act, batch.next_obs))
        if obs.ndim != 2 or obs.shape[1] != m.obs_dim or next_obs.shape != obs.shape:
            raise ValueError(f'ModelTrainer.fit: obs/next_obs must be (N, {m.obs_dim}), got '
                             f'{obs.shape} and {next_obs.shape}')
        if act.ndim != 2 or act.shape[1] != m.act_dim:
            raise ValueError(f'ModelTrainer.fit: act must be (N, {m.act_dim}), got {act.shape}')
        bad = count_nonfinite_rows(batch)
        if bad:
            raise ValueError(f'ModelTrainer.fit: {bad} of {n} rows contain NaN or inf in '
                             f'obs/act/next_obs; drop them before training')
        if n < 1:
            raise ValueError('ModelTrainer.fit: no rows')

    def fit(self, batch: TransitionBatch, max_epochs: Optional[int] = None,
            patience: Optional[int] = None, epoch_callback: Optional[EpochCallback] = None,
            stop_event: Optional[threading.Event] = None,
            ids: Optional[np.ndarray] = None) -> TrainResult:
        """Train the model on ``batch`` (N rows of obs (N, S), act (N, A), next_obs (N, S)).

        Args:
            batch: real transitions; reward and done are not used.
            max_epochs: overrides the constructor's ``max_epochs`` for this call.
            patience: overrides the constructor's ``patience`` for this call.
            epoch_callback: called as ``epoch_callback(epoch, train_loss, val_loss)`` after each
                epoch (epoch counts from 1).
            stop_event: when set (checked between minibatches), training ends and the best
                weights found so far are kept; if no epoch finished, the model is restored to
                its state before the call.
            ids: (N,) distinct non-negative int ids, stable across fits (e.g. sequence numbers);
                they decide the validation split (:func:`validation_mask`). Default: the row
                index, stable for an append-only dataset.

        Returns:
            A ``TrainResult``; the model holds the best weights per member and its
            ``elite_indices`` are updated (unchanged when no member improved).

        Raises:
            ValueError: wrong shapes, non-finite rows (the message counts them), too few rows,
                bad ids.
        """
        max_epochs = self.max_epochs if max_epochs is None else max_epochs
        patience = self.patience if patience is None else patience
        if max_epochs < 1 or patience < 1:
            raise ValueError('ModelTrainer.fit: max_epochs and patience must be >= 1')
        self._check_batch(batch)
        model = self.model
        device = model.device
        k_members = model.ensemble_size
        initial_state = copy.deepcopy(model.state_dict())
        initial_elites = list(model.elite_indices)

        gen = torch.Generator(device='cpu').manual_seed(self.seed)
        n = len(batch)
        if ids is None:
            ids = np.arange(n)
        elif len(ids) != n:
            raise ValueError(f'ModelTrainer.fit: {len(ids)} ids for {n} rows')
        is_val = validation_mask(ids, self.validation_fraction)
        val_idx, train_idx = np.flatnonzero(is_val), np.flatnonzero(~is_val)
        n_val = len(val_idx)
        if len(train_idx) < 1:
            raise ValueError(f'ModelTrainer.fit: {n} rows are too few for validation_fraction='
                             f'{self.validation_fraction}')

        def tensor(x: np.ndarray, idx: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x)[idx], dtype=torch.float32, device=device)

        obs_t, act_t, nxt_t = (tensor(x, train_idx)
                               for x in (batch.obs, batch.act, batch.next_obs))
        model.fit_normalizers(obs_t, act_t, nxt_t)
        with torch.no_grad():
            x_train = model.normalized_inputs(obs_t, act_t)
            y_train = model.normalized_targets(obs_t, nxt_t)
            if n_val > 0:
                obs_v, act_v, nxt_v = (tensor(x, val_idx)
                                       for x in (batch.obs, batch.act, batch.next_obs))
                x_val = model.normalized_inputs(obs_v, act_v)
                y_val = model.normalized_targets(obs_v, nxt_v)
            else:
                x_val, y_val = x_train, y_train
        n_train = len(train_idx)
        if self.bootstrap:
            member_idx = torch.randint(n_train, (k_members, n_train), generator=gen)
        else:
            member_idx = torch.arange(n_train).expand(k_members, n_train)
        member_idx = member_idx.to(device)

        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        result = TrainResult(n_train=n_train, n_val=n_val)
        # The starting point: the current weights under the refitted normalisers.
        best_scores = model.eval_score(x_val, y_val).cpu()
        best_state = _clone_state(model)
        ever_improved = torch.zeros(k_members, dtype=torch.bool)
        epochs_without_improvement = 0
        finished_epochs = 0

        for epoch in range(1, max_epochs + 1):
            model.train()
            order = torch.argsort(torch.rand(k_members, n_train, generator=gen), dim=1)
            shuffled = member_idx.gather(1, order.to(device))
            total, batches = 0.0, 0
            cancelled = False
            for start in range(0, n_train, self.batch_size):
                if stop_event is not None and stop_event.is_set():
                    cancelled = True
                    break
                idx = shuffled[:, start:start + self.batch_size]
                loss = model.loss(x_train[idx], y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
                batches += 1
            if cancelled:
                result.cancelled = True
                break
            model.eval()
            scores = model.eval_score(x_val, y_val).cpu()
            train_loss = float(total) / max(batches, 1)
            val_loss = float(scores.mean())
            result.train_losses.append(train_loss)
            result.val_losses.append(val_loss)
            finished_epochs = epoch
            improved = (best_scores - scores) / best_scores.abs().clamp_min(1e-12) \
                > self.min_rel_improvement
            if bool(improved.any()):
                _copy_members(model, best_state, improved)
                best_scores = torch.where(improved, scores, best_scores)
                ever_improved |= improved
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            if epoch_callback is not None:
                epoch_callback(epoch, train_loss, val_loss)
            # Patience runs from the first improvement: until some member has beaten its
            # starting score the fit goes on (to max_epochs at most), see the class docstring.
            if bool(ever_improved.any()) and epochs_without_improvement >= patience:
                result.stopped_early = epoch < max_epochs
                break

        result.epochs = finished_epochs
        result.members_improved = int(ever_improved.sum())
        model.eval()
        if finished_epochs == 0:
            model.load_state_dict(initial_state)
            model.set_elites(initial_elites)
            return result
        if result.members_improved == 0:
            # Nothing better than what we started from: the model as it was, old normalisers
            # included, scored on this fit's validation rows.
            model.load_state_dict(initial_state)
            model.set_elites(initial_elites)
            with torch.no_grad():
                x_val = model.normalized_inputs(obs_v if n_val > 0 else obs_t,
                                                act_v if n_val > 0 else act_t)
                y_val = model.normalized_targets(obs_v if n_val > 0 else obs_t,
                                                 nxt_v if n_val > 0 else nxt_t)
            final = model.eval_score(x_val, y_val).cpu()
        else:
            model.load_state_dict(best_state)
            final = model.eval_score(x_val, y_val).cpu()
            order = torch.argsort(final).tolist()
            model.set_elites(sorted(order[:model.num_elites]))
        result.member_val_losses = final.tolist()
        result.best_val_loss = float(final.mean())
        result.elite_indices = list(model.elite_indices)
        return result


def _clone_state(model: GaussianEnsemble) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _copy_members(model: GaussianEnsemble, best: Dict[str, torch.Tensor],
                  improved: torch.Tensor) -> None:
    """Copy the improved members' slices of every per-member tensor into ``best``.

    Per-member tensors have the ensemble size as leading dimension (layer weights and biases);
    shared tensors (log-variance bounds, normalisers) are taken from the current state whenever
    any member improved.
    """
    mask = improved.to(model.device)
    k_members = model.ensemble_size
    for name, value in model.state_dict().items():
        if name.startswith('layers.') and value.ndim >= 1 and value.shape[0] == k_members:
            best[name][mask] = value.detach()[mask]
        else:
            best[name] = value.detach().clone()
