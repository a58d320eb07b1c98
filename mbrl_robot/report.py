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
"""Run report: report.md and PNG plots from a run directory's summary.json.

Written by the recipe (node or in-process) when it ends, or by hand:
``python -m mbrl_robot.report RUN_DIR``. Shows at a glance whether learning worked: success rate
and final distance against real transitions per iteration (with the random and do-nothing
baselines), the plan latency histogram, the ensemble's train/validation loss per retrain, and
the final model's measured H-step error beside the compounding-error bound.
"""

import argparse
import json
import math
import numbers
import os
import pickle
import re
import sqlite3
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

HORIZONS = (1, 2, 5, 10, 15, 20, 25)


def held_out_trajectories(run_dir: str, summary: Dict[str, Any]):
    """Episodes the latest model never trained on, (obs (T+1, S), act (T, A)), from the buffer.

    Those are the episodes after the training phase that produced the latest accepted model:
    the evaluation episodes of a complete run, the last MPC episodes of a stopped one.
    """
    from mbrl_robot.core.buffer.storage import TransitionStore
    buffer_dir = os.path.join(run_dir, 'buffer')
    accepted = [t for t in summary['trainings'] if not t.get('rejected')]
    if not accepted or not os.path.isfile(os.path.join(buffer_dir, 'transitions.sqlite3')):
        return []
    last = max(accepted, key=lambda t: t['version'])
    held_out = {e['index'] for e in summary['episodes']
                if e['index'] > last['index'] and e['policy'] == 'planner'}
    store = TransitionStore.open_read_only(buffer_dir)  # a report changes nothing of its run
    try:
        records = store.records(dtype=np.float64)
    finally:
        store.close()
    trajectories = []
    for episode in sorted(held_out):
        rows = np.flatnonzero(records.episode == episode)
        if len(rows) < 2:
            continue
        b = records.batch
        trajectories.append((np.concatenate([b.obs[rows], b.next_obs[rows[-1:]]]),
                             b.act[rows]))
    return trajectories


def model_error_rows(model_dir: str, trajectories, horizons: Sequence[int] = HORIZONS):
    """Measured H-step error of a saved model on held-out episodes, beside the bound."""
    from mbrl_robot.core.models import GaussianEnsemble
    from mbrl_robot.core.theory import error_table
    model = GaussianEnsemble.load(model_dir)
    longest = min(len(a) for _, a in trajectories)
    return error_table(model, trajectories, [h for h in horizons if h <= longest])


def latest_model_dir(run_dir: str) -> Optional[str]:
    """The newest checkpoint folder, ``models/v<N>`` (not a ``v<N>.tmp`` a trainer left half
    written when it was stopped)."""
    models = os.path.join(run_dir, 'models')
    try:
        names = os.listdir(models)
    except OSError:
        return None
    versions = sorted((int(n[1:]), n) for n in names
                      if re.fullmatch(r'v\d+', n) and os.path.isdir(os.path.join(models, n)))
    return os.path.join(models, versions[-1][1]) if versions else None


# What the report reads of summary.json: key -> its type, a mapping of the fields a record must
# have, or (list or dict, what each item must be). NUMBERs must be finite; a MEASURED figure may
# be NaN (a percentile of nothing: a controller that has not planned since it started).
NUMBER, INTEGER, MEASURED = (numbers.Real,), (numbers.Integral,), (numbers.Real, float)
SUMMARY_FIELDS = {
    'wall_s': NUMBER, 'success_radius_m': NUMBER, 'transitions_used': INTEGER,
    'plan_ms': (list, NUMBER),
    'plan_latency_ms': {'median': NUMBER, 'p99': NUMBER, 'max': NUMBER, 'count': INTEGER},
    'stages': (dict, {'episodes': INTEGER, 'success_rate': NUMBER,
                      'mean_final_distance': NUMBER}),
    'episodes': (list, {'index': INTEGER, 'stage': (str,), 'policy': (str,),
                        'iteration': INTEGER, 'success': (bool,), 'final_distance': NUMBER}),
    'trainings': (list, {'version': INTEGER, 'index': INTEGER, 'iteration': INTEGER}),
}
# Read when present.
OPTIONAL_SUMMARY_FIELDS = {
    'controller_timing_ms': (dict, MEASURED),
    'model_error': (list, {'H': INTEGER, 'measured': NUMBER, 'bound': NUMBER, 'eps': NUMBER,
                           'L': NUMBER}),
}


def check_summary(summary: Any) -> None:
    """Raise ``ValueError`` naming the first field of ``summary.json`` the report cannot read
    (a damaged or foreign file), instead of an error from deep in the report."""
    def check(value, spec, where):
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ValueError(f'summary.json: {where} is not a mapping')
            for key, inner in spec.items():
                if key not in value:
                    raise ValueError(f'summary.json{": " + where if where else ""} has no '
                                     f'{key!r}')
                check(value[key], inner, f'{where}.{key}' if where else key)
        elif spec[0] in (list, dict):
            container, inner = spec
            if not isinstance(value, container):
                raise ValueError(f'summary.json: {where} is not a '
                                 + ('list' if container is list else 'mapping'))
            for key, item in (value.items() if container is dict else enumerate(value)):
                check(item, inner, f'{where}[{key!r}]')
        elif (not isinstance(value, spec) or (isinstance(value, bool) and bool not in spec)
              or (spec is not MEASURED and isinstance(value, numbers.Real)
                  and not math.isfinite(value))):
            what = {NUMBER: 'a finite number', INTEGER: 'an integer',
                    MEASURED: 'a number'}.get(spec, f'a {spec[0].__name__}')
            raise ValueError(f'summary.json: {where} = {value!r:.40} is not {what}')

    if not isinstance(summary, dict):
        raise ValueError(f'summary.json holds a {type(summary).__name__}, not a run summary')
    check(summary, SUMMARY_FIELDS, '')
    check(summary, {k: v for k, v in OPTIONAL_SUMMARY_FIELDS.items() if k in summary}, '')


def _losses(run_dir: str, summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for t in summary['trainings']:
        if 'val_losses' not in t:
            announcement = os.path.join(run_dir, 'models', f'v{t["version"]:04d}',
                                        'announcement.json')
            if os.path.isfile(announcement):
                with open(announcement) as f:
                    t = {**t, **json.load(f)}
        if t.get('val_losses'):
            out.append(t)
    return out


def _per_iteration(summary):
    """(transitions the model was trained on, MPC success rate, mean final distance) per iter."""
    trained_on = {t['iteration']: t.get('n_transitions') for t in summary['trainings']}
    rows = []
    for it in sorted({e['iteration'] for e in summary['episodes'] if e['stage'] == 'mpc'}):
        eps = [e for e in summary['episodes'] if e['stage'] == 'mpc' and e['iteration'] == it]
        rows.append((trained_on.get(it - 1), float(np.mean([e['success'] for e in eps])),
                     float(np.mean([e['final_distance'] for e in eps]))))
    final = [e for e in summary['episodes'] if e['stage'] == 'eval_planner']
    if final and trained_on:
        rows.append((trained_on.get(max(trained_on)),
                     float(np.mean([e['success'] for e in final])),
                     float(np.mean([e['final_distance'] for e in final]))))
    return rows


def _propagation(plan: dict) -> str:
    """The propagation a planner block resolves to (``auto`` depends on the planner)."""
    if plan.get('propagation', 'auto') != 'auto':
        return plan['propagation']
    from mbrl_robot.core.planning.factory import resolve_planner_cfg
    return resolve_planner_cfg(plan)['propagation']


def setup_lines(run_dir: str) -> List[str]:
    """What was run, from the run's effective ``params.yaml``: task, reward, planner or policy,
    ensemble, goal hold (empty if the run directory has none)."""
    from mbrl_robot.config import node_params
    path = os.path.join(run_dir, 'params.yaml')
    if not os.path.isfile(path):
        return []
    ctl, trainer = node_params(path, 'controller'), node_params(path, 'trainer')
    task, reward = ctl['task'], ctl['task'].get('reward', {})
    plan = ctl['planner']
    model = trainer['model']
    hold = ctl.get('goal_hold', {})
    if ctl.get('mode', 'planner') == 'policy':
        learner = (f'policy mode: {trainer.get("algorithm", "ensemble")} policy, one forward '
                   f'per step, exploration noise {ctl.get("policy_exploration_std", 0.0)}')
    else:
        learner = (f'planner {plan["name"]}: H={plan["horizon"]}, N={plan["population_size"]}, '
                   f'M={plan["elite_count"]}, I={plan["iterations"]}, propagation '
                   f'{_propagation(plan)} x {plan["particles"]} particle(s)')
    terms = ['-||puck - target||']
    if reward.get('tool_shaping_weight', 0.0):
        way = ('way around the puck from tool tip to push point'
               if reward.get('tool_path') == 'around_puck' else '||tool tip - push point||')
        terms.append(f'- {reward["tool_shaping_weight"]} {way}'
                     + (f' (fading over the last {reward["tool_shaping_fade_m"]} m)'
                        if reward.get('tool_shaping_fade_m', 0.0) else ''))
    if reward.get('action_cost', 0.0):
        terms.append(f'- {reward["action_cost"]} ||a||^2')
    if reward.get('tool_intrusion_weight', 0.0):
        terms.append(f'- {reward["tool_intrusion_weight"]} depth of the tool inside the puck '
                     f'(within {reward.get("tool_intrusion_radius_m", 0.02) * 100:.1f} cm of '
                     'its centre)')
    hold_text = (f'holds zero velocity within {hold["enter_radius_m"] * 100:.1f} cm of the '
                 f'target until the puck is {hold["exit_radius_m"] * 100:.1f} cm away'
                 if hold.get('enter_radius_m', 0.0) else 'off')
    return ['## Setup', '',
            f'- Task: {task["episode_steps"]} steps at {task["control_rate_hz"]:.0f} Hz, action '
            f'+-1 = {task["max_joint_speed_rad_s"]} rad/s, success radius '
            f'{task["success_radius_m"] * 100:.0f} cm (twin defaults for puck and target).',
            f'- Reward: {" ".join(terms)}.',
            f'- Controller: {learner}; goal hold {hold_text}.',
            f'- Ensemble: K={model["ensemble_size"]} x {model["num_layers"]}x'
            f'{model["hidden_size"]}, {"probabilistic" if model["probabilistic"] else "MSE"}, '
            f'predicting state deltas.', '']


def write_report(run_dir: str, model_error: Optional[List[Dict[str, float]]] = None) -> str:
    """Write ``report.md`` and its plots into ``run_dir``; returns the report's path.

    Args:
        run_dir: holds summary.json (and, for graph runs, models/ and buffer/).
        model_error: rows of :func:`mbrl_robot.core.theory.error_table`; default: measured
            from the latest checkpoint on the run's held-out evaluation episodes when present.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    with open(os.path.join(run_dir, 'summary.json')) as f:
        summary = json.load(f)
    check_summary(summary)
    if model_error is None:
        model_error = summary.get('model_error')
    model_error_note = None
    if model_error is None and latest_model_dir(run_dir):
        try:
            trajectories = held_out_trajectories(run_dir, summary)
            if trajectories:
                model_error = model_error_rows(latest_model_dir(run_dir), trajectories)
        except (OSError, ValueError, KeyError, RuntimeError, EOFError, sqlite3.Error,
                pickle.UnpicklingError) as e:  # a damaged store or model: this section only
            what = (f'{e.strerror}: {e.filename}' if isinstance(e, OSError) and e.strerror
                    else f'{type(e).__name__}: {e}')
            model_error_note = f'H-step model error not measured ({what}).'
    stages = summary['stages']
    figures = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    points = [p for p in _per_iteration(summary) if p[0] is not None]
    if points:
        x = [p[0] for p in points]
        ax1.plot(x, [100 * p[1] for p in points], 'o-', label='MPC (per iteration; last: eval)')
        ax2.plot(x, [p[2] for p in points], 'o-', label='MPC (per iteration; last: eval)')
    for stage, style in (('eval_random', 'r--'), ('eval_zero', 'k:')):
        if stage in stages:
            ax1.axhline(100 * stages[stage]['success_rate'], color=style[0],
                        linestyle=style[1:], label=stage.replace('eval_', '') + ' policy')
            ax2.axhline(stages[stage]['mean_final_distance'], color=style[0],
                        linestyle=style[1:], label=stage.replace('eval_', '') + ' policy')
    ax2.axhline(summary['success_radius_m'], color='g', linewidth=0.8, label='success radius')
    ax1.set(xlabel='real transitions the model was trained on', ylabel='success rate (%)',
            ylim=(-5, 105), title='Success rate')
    ax2.set(xlabel='real transitions the model was trained on',
            ylabel='mean final puck-target distance (m)', title='Final distance')
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figures.append(('learning.png', fig))

    if summary['plan_ms']:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(summary['plan_ms'], bins=50)
        ax.axvline(50.0, color='r', linestyle='--', label='20 Hz period')
        ax.set(xlabel='ms per plan', ylabel='plans', title='Plan latency')
        ax.legend()
        figures.append(('plan_latency.png', fig))

    losses = _losses(run_dir, summary)
    if losses:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for t in losses:
            line, = ax.plot(t['train_losses'], alpha=0.6)
            ax.plot(t['val_losses'], '--', color=line.get_color(),
                    label=f'v{t["version"]}: {t.get("n_transitions")} transitions')
        ax.set(xlabel='epoch', ylabel='loss (solid train NLL/MSE, dashed validation MSE)',
               title='Ensemble training')
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        figures.append(('ensemble_loss.png', fig))

    if model_error:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        h = [r['H'] for r in model_error]
        ax.semilogy(h, [r['measured'] for r in model_error], 'o-', label='measured (held out)')
        ax.semilogy(h, [r['bound'] for r in model_error], 's--',
                    label=f'bound eps(L^H-1)/(L-1), eps={model_error[0]["eps"]:.4f}, '
                          f'L={model_error[0]["L"]:.2f}')
        ax.set(xlabel='horizon H', ylabel='state error (L2)', title='H-step model error')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        figures.append(('model_error.png', fig))

    for name, fig in figures:
        fig.tight_layout()
        fig.savefig(os.path.join(run_dir, name), dpi=110)
        plt.close(fig)

    profile = f'Profile `{summary["profile"]}`; ' if 'profile' in summary else ''
    lines = [f'# mbrl_robot run report: {os.path.basename(os.path.abspath(run_dir))}', '',
             f'{profile}wall time {summary["wall_s"] / 60:.1f} min; '
             f'{summary["transitions_used"]} real transitions used for learning; success = final'
             f' puck-target distance < {summary["success_radius_m"] * 100:.0f} cm.', '',
             '| stage | episodes | success rate | mean final distance (m) |', '|---|---|---|---|']
    for stage, s in stages.items():
        lines.append(f'| {stage} | {s["episodes"]} | {100 * s["success_rate"]:.0f}% | '
                     f'{s["mean_final_distance"]:.3f} |')
    lat = summary['plan_latency_ms']
    lines += [''] + setup_lines(run_dir)
    lines += [f'Plan latency: median {lat["median"]:.1f} ms, p99 {lat["p99"]:.1f} ms, '
              f'max {lat["max"]:.1f} ms over {lat["count"]} plans.', '']
    timing = summary.get('controller_timing_ms') or {}
    if timing:
        lines += ['Control loop (the diagnostics of the controller, ms; '
                  f'{summary.get("deadline_misses")} deadline misses in '
                  f'{summary.get("controller_ticks")} ticks; '
                  f'{summary.get("dropped_timing", 0)} row pairs not one period apart dropped):',
                  '', '| figure | p50 | p99 |', '|---|---|---|']
        for name in ('tick_interval_ms', 'joint_age_ms', 'puck_age_ms', 'plan_ms',
                     'send_delay_ms'):
            if f'{name}_p50' in timing:
                lines.append(f'| {name[:-3].replace("_", " ")} | {timing[name + "_p50"]:.1f} | '
                             f'{timing[name + "_p99"]:.1f} |')
        lines.append('')
    if model_error_note:
        lines += [model_error_note, '']
    if model_error:
        lines += ['| H | measured H-step error | bound |', '|---|---|---|']
        lines += [f'| {r["H"]} | {r["measured"]:.4f} | {r["bound"]:.4g} |' for r in model_error]
        lines.append('')
    lines += [f'![{name}]({name})' for name, _ in figures]
    path = os.path.join(run_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write report.md and plots for a run dir.')
    parser.add_argument('run_dir')
    run_dir = parser.parse_args(argv).run_dir
    try:
        print(write_report(run_dir))
    except (OSError, ValueError, KeyError, TypeError) as e:  # no run there, or a damaged one
        what = (f'{e.strerror}: {e.filename}' if isinstance(e, OSError) and e.strerror
                else f'{type(e).__name__}: {e}')
        print(f'mbrl_robot.report: {run_dir}: no report ({what})', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
