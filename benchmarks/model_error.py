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
"""Compounding model error: measured open-loop H-step error of a learned ensemble vs. the bound.

Trains (or loads) a ``GaussianEnsemble``, rolls its ensemble mean open loop over held-out
episodes from every start index, estimates ``eps`` (mean one-step error) and ``L`` (95th
percentile of the Jacobian spectral norm of the learned step map) on the held-out transitions,
prints the table of ``mbrl_robot.core.theory.format_table`` and then one JSON line per H:
``{"H": .., "measured": .., "bound": .., "eps": .., "L": ..}``.

Usage:
  ``python benchmarks/model_error.py --synthetic`` (damped pendulum, < 1 min on a CPU)
  ``python benchmarks/model_error.py --data buffer.npz [--model-dir DIR] [--profile lecture]``

``--data`` reads an .npz with ``obs (N, S)``, ``act (N, A)``, ``next_obs (N, S)`` and optionally
``done (N,)`` (the buffer's ``export_npz`` layout), rows in time order. ``--model-dir``: if it
holds a saved model, that model is loaded and only evaluated; otherwise the model trained here
is saved there. The last ``--holdout`` share of the episodes is never used for training.
"""

import argparse
import json
import os
import sys
import time
import zipfile
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from mbrl_robot.config import node_params, number_argument, profile_argument
from mbrl_robot.core.models import create_model, create_trainer, GaussianEnsemble
from mbrl_robot.core.theory import (batch_to_trajectories, error_table, format_table,
                                    trajectories_to_batch)
from mbrl_robot.core.types import TransitionBatch

SYNTHETIC_MODEL = {'name': 'gaussian_ensemble', 'ensemble_size': 5, 'num_layers': 3,
                   'hidden_size': 128, 'activation': 'silu', 'probabilistic': True,
                   'weight_decay': 5e-5}
SYNTHETIC_TRAINING = {'learning_rate': 1e-2, 'batch_size': 256, 'validation_fraction': 0.1,
                      'max_epochs': 60, 'patience': 8, 'bootstrap': True, 'seed': 0}


def pendulum_episodes(n_episodes: int, steps: int, seed: int) -> List[Tuple[np.ndarray, ...]]:
    """Damped, torque-driven pendulum, state (theta, omega), action (1,) in [-1, 1], dt = 0.05.

    omega' = omega + dt (-9.81 sin(theta) - 0.3 omega + 3 a), theta' = theta + dt omega'.
    Actions are smoothed random noise so episodes visit swings of varied amplitude.
    """
    rng = np.random.default_rng(seed)
    dt = 0.05
    out = []
    for _ in range(n_episodes):
        s = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-2.0, 2.0)])
        obs, act = [s], []
        a = 0.0
        for _ in range(steps):
            a = float(np.clip(0.8 * a + 0.6 * rng.uniform(-1.0, 1.0), -1.0, 1.0))
            omega = s[1] + dt * (-9.81 * np.sin(s[0]) - 0.3 * s[1] + 3.0 * a)
            s = np.array([s[0] + dt * omega, omega])
            obs.append(s)
            act.append([a])
        out.append((np.array(obs, np.float32), np.array(act, np.float32)))
    return out


def load_npz(path: str) -> TransitionBatch:
    """Rows of an .npz with obs, act, next_obs (and optionally done) as a TransitionBatch."""
    try:
        data = np.load(path)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:  # not an .npz, or a damaged one
        raise ValueError(f'{path}: not an .npz of arrays ({e})') from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f'{path}: one array, not an .npz of obs, act and next_obs')
    with data:
        missing = [k for k in ('obs', 'act', 'next_obs') if k not in data]
        if missing:
            raise ValueError(f'{path}: missing arrays {missing}')
        n = len(data['obs'])
        done = data['done'].astype(bool) if 'done' in data else np.zeros(n, bool)
        reward = data['reward'] if 'reward' in data else np.zeros(n)
        return TransitionBatch(data['obs'].astype(np.float32), data['act'].astype(np.float32),
                               data['next_obs'].astype(np.float32),
                               reward.astype(np.float32), done)


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Train or load, evaluate, and return the error table rows."""
    torch.manual_seed(args.seed)
    if args.synthetic:
        episodes = pendulum_episodes(args.episodes, 100, args.seed)
        model_cfg, training_cfg = dict(SYNTHETIC_MODEL), dict(SYNTHETIC_TRAINING)
    else:
        episodes = batch_to_trajectories(load_npz(args.data))
        params = node_params(args.profile, 'trainer')
        model_cfg, training_cfg = params['model'], params['training']
    if args.max_epochs is not None:
        training_cfg['max_epochs'] = args.max_epochs
    n_hold = max(1, int(round(len(episodes) * args.holdout)))
    if n_hold >= len(episodes):
        raise ValueError(f'{len(episodes)} episodes: too few to hold out {n_hold}')
    train_eps, test_eps = episodes[:-n_hold], episodes[-n_hold:]
    obs_dim, act_dim = episodes[0][0].shape[1], episodes[0][1].shape[1]

    saved = args.model_dir and os.path.isfile(os.path.join(args.model_dir, 'model.json'))
    if args.model_dir and not saved and os.path.exists(args.model_dir) and (
            not os.path.isdir(args.model_dir) or os.listdir(args.model_dir)):
        # A damaged checkpoint (its model.json lost) or anything else: never written over.
        raise ValueError(f'--model-dir {args.model_dir}: holds no model.json but is not an '
                         'empty folder: not writing the trained model over it')
    if saved:
        model = GaussianEnsemble.load(args.model_dir, obs_dim=obs_dim, act_dim=act_dim)
        print(f'loaded {args.model_dir}', file=sys.stderr)
    else:
        model = create_model(model_cfg, obs_dim, act_dim, seed=args.seed)
        t0 = time.monotonic()
        result = create_trainer(model, training_cfg).fit(trajectories_to_batch(train_eps))
        print(f'trained on {sum(len(a) for _, a in train_eps)} transitions: {result.epochs} '
              f'epochs, val loss {result.best_val_loss:.3g}, '
              f'{time.monotonic() - t0:.1f} s', file=sys.stderr)
        if args.model_dir:
            model.save(args.model_dir)
    model.eval()
    horizons = args.horizons
    longest = max(len(a) for _, a in test_eps)
    dropped = [h for h in horizons if h > longest]
    if dropped:
        print(f'skipping H={dropped}: longer than every held-out episode ({longest} steps)',
              file=sys.stderr)
    horizons = [h for h in horizons if h <= longest]
    return error_table(model, test_eps, horizons, batch=trajectories_to_batch(test_eps))


def positive_ints(text: str) -> List[int]:
    """``--horizons``: comma-separated whole numbers of at least 1."""
    try:
        values = [int(h) for h in text.split(',')]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: comma-separated whole numbers >= 1')
    return values


def share(text: str) -> float:
    """``--holdout``: a share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f'{text!r}: a share between 0 and 1')
    return value


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--synthetic', action='store_true', help='damped pendulum data')
    source.add_argument('--data', help='.npz with obs, act, next_obs[, done]')
    parser.add_argument('--model-dir', help='load the model from here, or save it here')
    parser.add_argument('--profile', type=profile_argument, default='lecture',
                        help='config profile whose trainer.model/training blocks are used')
    parser.add_argument('--horizons', type=positive_ints, default=[1, 2, 5, 10, 15, 20, 25],
                        help='comma-separated H')
    parser.add_argument('--holdout', type=share, default=0.2, help='share of episodes held out')
    parser.add_argument('--episodes', type=number_argument(int, 2, True), default=60,
                        help='synthetic episodes')
    parser.add_argument('--max-epochs', type=number_argument(int, 1, True), default=None,
                        help='override max_epochs')
    parser.add_argument('--seed', type=number_argument(int, 0, True), default=0)
    parser.add_argument('--threads', type=number_argument(int, 1, True), default=1,
                        help='torch CPU threads (1 avoids oversubscription on shared cores)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        rows = run(args)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # A missing, damaged or foreign data file or model, a profile that does not validate.
        what = f'{e.strerror}: {e.filename}' if isinstance(e, OSError) and e.strerror else e
        print(f'model_error.py: {what}', file=sys.stderr)
        return 2
    print(format_table(rows))
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == '__main__':
    sys.exit(main())
