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
"""Tests of the batched Gaussian ensemble, its trainer, persistence and factory."""

import hashlib
import json
import shutil
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrl_robot.config import node_params
from mbrl_robot.core.models import create_model, create_trainer, GaussianEnsemble, ModelTrainer
from mbrl_robot.core.types import TransitionBatch

SMALL = {'name': 'gaussian_ensemble', 'ensemble_size': 3, 'num_layers': 2, 'hidden_size': 64,
         'activation': 'silu', 'probabilistic': True, 'weight_decay': 5e-5}
TRAIN = {'learning_rate': 3e-3, 'batch_size': 128, 'validation_fraction': 0.15, 'max_epochs': 40,
         'patience': 8, 'bootstrap': True, 'seed': 0}


def sine_system(n, seed, noise_std=0.0):
    """s' = s + 0.1 sin(s) + 0.1 a (per dim), S=2, A=2, plus optional Gaussian noise."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-3.0, 3.0, (n, 2)).astype(np.float32)
    a = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    s2 = s + 0.1 * np.sin(s) + 0.1 * a
    if np.any(noise_std):
        s2 = s2 + rng.normal(size=s2.shape) * noise_std
    return TransitionBatch(s, a, s2.astype(np.float32), np.zeros(n, np.float32),
                           np.zeros(n, bool))


@pytest.fixture(scope='module')
def trained():
    torch.manual_seed(0)
    model = create_model(SMALL, 2, 2, seed=0)
    result = create_trainer(model, TRAIN).fit(sine_system(2000, seed=0))
    return model, result


def manual_member_forward(model, k, x):
    h = x
    for layer in model.layers[:-1]:
        h = F.silu(h @ layer.weight[k] + layer.bias[k, 0])
    out = h @ model.layers[-1].weight[k] + model.layers[-1].bias[k, 0]
    mean, logvar = out[:, :model.obs_dim], out[:, model.obs_dim:]
    logvar = model.max_logvar - F.softplus(model.max_logvar - logvar)
    logvar = model.min_logvar + F.softplus(logvar - model.min_logvar)
    return mean, logvar


def test_batched_forward_equals_separate_members():
    model = GaussianEnsemble(3, 2, ensemble_size=4, num_layers=3, hidden_size=16, seed=1)
    x = torch.randn(4, 7, 5)
    mean, logvar = model(x)
    assert mean.shape == logvar.shape == (4, 7, 3)
    for k in range(4):
        m_k, lv_k = manual_member_forward(model, k, x[k])
        torch.testing.assert_close(mean[k], m_k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logvar[k], lv_k, rtol=1e-5, atol=1e-6)
    # A shared (B, in) input is the same as repeating it for each member.
    shared_mean, _ = model(x[0])
    torch.testing.assert_close(shared_mean, model(x[0].expand(4, 7, 5))[0])


def test_sample_next_matches_predict_and_is_reproducible(trained):
    model, _ = trained
    obs, act = torch.randn(3, 11, 2), torch.rand(3, 11, 2) * 2 - 1
    with torch.no_grad():
        mean, var = model.predict(obs, act)
    det = model.sample_next(obs, act, deterministic=True)
    torch.testing.assert_close(det, mean, rtol=1e-5, atol=1e-6)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = model.sample_next(obs, act, generator=g1)
    s2 = model.sample_next(obs, act, generator=g2)
    torch.testing.assert_close(s1, s2)
    assert not torch.equal(s1, det)
    # Sample spread follows the predicted variance: standardised residuals have unit scale.
    big_obs, big_act = obs[:, :1].expand(3, 4000, 2), act[:, :1].expand(3, 4000, 2)
    z = (model.sample_next(big_obs, big_act, generator=g1) - mean[:, :1]) / var[:, :1].sqrt()
    assert 0.9 < float(z.std()) < 1.1
    with pytest.raises(ValueError, match='sample_next'):
        model.sample_next(obs[:2], act[:2])


def test_members_differ(trained):
    model, _ = trained
    w = model.layers[0].weight
    assert not torch.allclose(w[0], w[1])
    obs, act = torch.randn(64, 2), torch.rand(64, 2)
    with torch.no_grad():
        mean, _ = model.predict(obs, act)
    spread = (mean - mean.mean(0)).abs().amax()
    assert float(spread) > 1e-5


def test_resampling_makes_identically_initialised_members_differ():
    # Bootstrap index sets and per-member minibatch order are the only source of diversity.
    model = create_model(SMALL, 2, 2, seed=0)
    with torch.no_grad():
        for layer in model.layers:  # every member starts from member 0's weights
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
            layer.bias.copy_(layer.bias[:1].expand_as(layer.bias))
    create_trainer(model, dict(TRAIN, max_epochs=2)).fit(sine_system(500, seed=0))
    with torch.no_grad():
        mean, _ = model.predict(torch.randn(32, 2), torch.rand(32, 2))
    assert float((mean[0] - mean[1]).abs().max()) > 1e-4
    assert float((mean[1] - mean[2]).abs().max()) > 1e-4


def test_learns_sine_system_far_below_zero_delta_baseline(trained):
    model, result = trained
    test = sine_system(1000, seed=99)
    obs, act, nxt = (torch.as_tensor(x) for x in (test.obs, test.act, test.next_obs))
    with torch.no_grad():
        pred = model.predict(obs, act)[0].mean(0)
    mse = float(((pred - nxt) ** 2).mean())
    baseline = float(((obs - nxt) ** 2).mean())  # "predict zero delta"
    assert mse < 0.05 * baseline, (mse, baseline)
    assert result.epochs >= 1 and len(result.val_losses) == result.epochs
    assert result.best_val_loss < 0.05  # normalised units: the zero-mean predictor scores ~1
    assert result.train_losses[-1] < result.train_losses[0]
    assert len(result.elite_indices) == 3 and result.elite_indices == model.elite_indices


def test_variance_is_larger_where_data_is_noisier():
    rng = np.random.default_rng(3)
    n = 2000
    s = rng.uniform(-2.0, 2.0, (n, 1)).astype(np.float32)
    a = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    noise_std = np.where(s > 0, 0.1, 0.01)
    s2 = (s + 0.1 * a + rng.normal(size=s.shape) * noise_std).astype(np.float32)
    batch = TransitionBatch(s, a, s2, np.zeros(n, np.float32), np.zeros(n, bool))
    cfg = dict(SMALL, hidden_size=32)
    model = create_model(cfg, 1, 1, seed=0)
    # Early stopping watches the mean's MSE, which plateaus before the variance head has
    # converged; a larger step size gets the log-variance there within the same few epochs.
    create_trainer(model, dict(TRAIN, learning_rate=1e-2, batch_size=64)).fit(batch)
    grid = torch.linspace(-1.8, 1.8, 200).unsqueeze(1)
    with torch.no_grad():
        _, var = model.predict(grid, torch.zeros_like(grid))
    var = var.mean(0).squeeze(1)
    noisy, quiet = var[grid[:, 0] > 0.3].mean(), var[grid[:, 0] < -0.3].mean()
    # True variance ratio is 100; demand at least 10 and a noisy-side std within 2x of 0.1.
    assert float(noisy / quiet) > 10.0, (float(noisy), float(quiet))
    assert 0.05 < float(noisy.sqrt()) < 0.2


def test_deterministic_ensemble_trains_with_mse():
    model = create_model(dict(SMALL, probabilistic=False), 2, 2, seed=0)
    assert model.max_logvar is None
    trainer = create_trainer(model, dict(TRAIN, learning_rate=1e-2, batch_size=64, max_epochs=15))
    result = trainer.fit(sine_system(1000, seed=1))
    assert result.best_val_loss < 0.05  # normalised units: the zero-mean predictor scores ~1
    mean, var = model.predict(torch.zeros(4, 2), torch.zeros(4, 2))
    assert torch.equal(var, torch.zeros_like(var))
    det = model.sample_next(torch.zeros(3, 4, 2), torch.zeros(3, 4, 2))
    torch.testing.assert_close(det, mean.detach())


def test_early_stopping_on_plateau():
    rng = np.random.default_rng(0)
    n = 600
    s = rng.normal(size=(n, 2)).astype(np.float32)
    a = rng.normal(size=(n, 1)).astype(np.float32)
    nxt = rng.normal(size=(n, 2)).astype(np.float32)  # unpredictable: validation plateaus
    batch = TransitionBatch(s, a, nxt, np.zeros(n, np.float32), np.zeros(n, bool))
    model = create_model(SMALL, 2, 1, seed=0)
    calls = []
    trainer = ModelTrainer(model, learning_rate=3e-3, batch_size=64, max_epochs=200, patience=3)
    result = trainer.fit(batch, epoch_callback=lambda e, t, v: calls.append((e, t, v)))
    assert result.stopped_early
    assert result.epochs < 50
    assert [c[0] for c in calls] == list(range(1, result.epochs + 1))
    assert len(result.val_losses) == result.epochs
    # Best weights per member are restored: the final score is the best seen, not the last.
    assert result.best_val_loss <= min(result.val_losses) + 1e-6


def test_stop_event_cancels_and_restores():
    model = create_model(SMALL, 2, 2, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stop = threading.Event()
    stop.set()
    result = create_trainer(model, TRAIN).fit(sine_system(500, seed=0), stop_event=stop)
    assert result.cancelled and result.epochs == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_nonfinite_data_rejected():
    batch = sine_system(100, seed=0)
    batch.obs[3, 0] = np.nan
    batch.next_obs[7, 1] = np.inf
    batch.next_obs[3, 1] = np.nan  # same row as obs[3]: counted once
    model = create_model(SMALL, 2, 2)
    with pytest.raises(ValueError, match='2 of 100 rows'):
        create_trainer(model, TRAIN).fit(batch)
    with pytest.raises(ValueError, match='act must be'):
        create_trainer(create_model(SMALL, 2, 3), TRAIN).fit(sine_system(100, seed=0))


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / 'm')
    meta = json.loads((tmp_path / 'm' / 'model.json').read_text())
    assert meta['sha256'] == hashlib.sha256((tmp_path / 'm' / 'model.pt').read_bytes()).hexdigest()
    assert meta['obs_dim'] == 2 and meta['format_version'] == 1
    assert meta['normalizers']['output']['std'] == pytest.approx(
        model.output_normalizer.std.tolist())
    loaded = GaussianEnsemble.load(tmp_path / 'm', obs_dim=2, act_dim=2)
    obs, act = torch.randn(3, 9, 2), torch.randn(3, 9, 2)
    with torch.no_grad():
        for a, b in zip(model.predict(obs, act), loaded.predict(obs, act)):
            assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(model.sample_next(obs, act, generator=g1),
                       loaded.sample_next(obs, act, generator=g2))
    assert loaded.elite_indices == model.elite_indices
    assert loaded.config == model.config


def test_bad_checkpoints_raise_clear_errors(trained, tmp_path):
    model, _ = trained
    good = model.save(tmp_path / 'good')

    def copy(name):
        return shutil.copytree(good, tmp_path / name)

    with pytest.raises(FileNotFoundError, match='does not exist'):
        GaussianEnsemble.load(tmp_path / 'nowhere')
    d = copy('no_pt')
    (d / 'model.pt').unlink()
    with pytest.raises(FileNotFoundError, match='model.pt'):
        GaussianEnsemble.load(d)
    d = copy('truncated')
    data = (d / 'model.pt').read_bytes()
    (d / 'model.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='model.pt.*truncated'):
        GaussianEnsemble.load(d)
    d = copy('corrupt_json')
    (d / 'model.json').write_text('{"format_version": 1, "obs')
    with pytest.raises(ValueError, match='model.json.*not valid JSON'):
        GaussianEnsemble.load(d)
    d = copy('version')
    meta = json.loads((d / 'model.json').read_text())
    (d / 'model.json').write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(ValueError, match='format version 99'):
        GaussianEnsemble.load(d)
    # Garbage with a matching checksum: the archive itself is unreadable.
    d = copy('garbage')
    junk = b'not a torch archive' * 10
    (d / 'model.pt').write_bytes(junk)
    (d / 'model.json').write_text(json.dumps(dict(meta, sha256=hashlib.sha256(junk).hexdigest())))
    with pytest.raises(ValueError, match='model.pt.*cannot be read'):
        GaussianEnsemble.load(d)
    # Weights of another architecture, checksum updated: shape mismatch.
    other = create_model(dict(SMALL, hidden_size=32), 2, 2).save(tmp_path / 'other')
    d = copy('mismatch')
    shutil.copy(other / 'model.pt', d / 'model.pt')
    sha = hashlib.sha256((d / 'model.pt').read_bytes()).hexdigest()
    (d / 'model.json').write_text(json.dumps(dict(meta, sha256=sha)))
    with pytest.raises(ValueError, match='do not match the architecture'):
        GaussianEnsemble.load(d)
    with pytest.raises(ValueError, match='obs_dim is 2, expected 17'):
        GaussianEnsemble.load(good, obs_dim=17)


def test_factory_builds_lecture_model_and_rejects_bad_config():
    params = node_params('lecture', 'trainer')
    model = create_model(params['model'], obs_dim=17, act_dim=7, seed=0)
    assert model.ensemble_size == 5 and model.num_layers == 4 and model.hidden_size == 500
    assert [tuple(layer.weight.shape) for layer in model.layers] == (
        [(5, 24, 500)] + [(5, 500, 500)] * 3 + [(5, 500, 34)])
    assert model.elite_indices == list(range(5))
    trainer = create_trainer(model, params['training'])
    assert trainer.batch_size == 256 and trainer.patience == 10
    # Same seed, same init; different seeds differ.
    w0 = create_model(SMALL, 2, 2, seed=4).layers[0].weight
    assert torch.equal(w0, create_model(SMALL, 2, 2, seed=4).layers[0].weight)
    assert not torch.equal(w0, create_model(SMALL, 2, 2, seed=5).layers[0].weight)
    for bad in ({'name': 'mlp'}, dict(SMALL, activation='gelu'), dict(SMALL, ensemble_size=0),
                dict(SMALL, num_elites=4), dict(SMALL, weight_decay=-1.0),
                dict(SMALL, probabilistic='yes'), dict(SMALL, hidden_sise=3)):
        with pytest.raises(ValueError):
            create_model(bad, 2, 2)
    for bad in ({'learning_rate': 0.0}, {'validation_fraction': 1.0}, {'patience': 0},
                {'batch': 3}):
        with pytest.raises(ValueError):
            create_trainer(create_model(SMALL, 2, 2), bad)


def test_elite_mask_and_device():
    model = create_model(dict(SMALL, num_elites=2), 2, 2)
    assert model.elite_indices == [0, 1]
    model.set_elites([2, 0])
    assert model.elite_mask().tolist() == [True, False, True]
    assert model.device == torch.device('cpu')
    with pytest.raises(ValueError):
        model.set_elites([3])


# ---------------------------------------------------------------------- issue 14
def test_validation_rows_stay_validation_across_fits_with_more_data():
    from mbrl_robot.core.models.trainer import validation_mask
    small, large = validation_mask(np.arange(400), 0.15), validation_mask(np.arange(1600), 0.15)
    # A row is validation in every fit or in none, whatever else the dataset holds.
    np.testing.assert_array_equal(small, large[:400])
    assert 0.1 < large.mean() < 0.2
    shuffled = np.random.default_rng(0).permutation(1600)
    np.testing.assert_array_equal(validation_mask(shuffled, 0.15), large[shuffled])
    # The trainer holds out exactly those rows, whatever its seed (it follows the version).
    model = create_model(SMALL, 2, 2, seed=0)
    batch = sine_system(1600, seed=0)
    for seed in (0, 7):
        res = create_trainer(model, dict(TRAIN, seed=seed, max_epochs=1)).fit(batch)
        assert (res.n_val, res.n_train) == (int(large.sum()), int((~large).sum()))
    # Ids given by the caller (e.g. sequence numbers) decide instead of the row index.
    res = create_trainer(model, dict(TRAIN, max_epochs=1)).fit(batch, ids=np.arange(1600) + 5)
    assert res.n_val == int(validation_mask(np.arange(1600) + 5, 0.15).sum())
    with pytest.raises(ValueError, match='distinct'):
        create_trainer(model, TRAIN).fit(batch, ids=np.zeros(1600, dtype=np.int64))


def test_fit_where_nothing_improves_returns_the_previous_model_exactly():
    model = create_model(SMALL, 2, 2, seed=0)
    create_trainer(model, dict(TRAIN, max_epochs=5)).fit(sine_system(500, seed=0))
    model.set_elites([1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obs, act = torch.randn(9, 2) * 5.0, torch.randn(9, 2)
    with torch.no_grad():
        expected = model.predict(obs, act)
    # New data over a wider range (the normalisers change) and no step that can count as an
    # improvement: the model must come back exactly as it was, old normalisers included.
    wide = sine_system(800, seed=1)
    wide = TransitionBatch(wide.obs * 3.0, wide.act, wide.next_obs * 3.0)
    trainer = create_trainer(model, dict(TRAIN, learning_rate=1e-12, min_rel_improvement=0.5,
                                         patience=2, max_epochs=4))
    res = trainer.fit(wide)
    with torch.no_grad():
        got = model.predict(obs, act)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # Patience never started (nothing improved): the fit ran to max_epochs before giving up.
    assert res.members_improved == 0 and res.epochs == 4 and not res.stopped_early
    assert model.elite_indices == [1]
    assert np.isfinite(res.best_val_loss)


def test_patience_runs_from_the_first_improvement(monkeypatch):
    # A warm-started fit whose first epochs are worse than the weights it started from (an
    # overconfident ensemble meeting new rows) and which then recovers: stopping `patience`
    # epochs in would hand back the old model (InvertedPendulum seed 0 stayed stale for 40
    # fits that way); the fit must run on until a member improves, then count patience.
    model = create_model(SMALL, 2, 2, seed=0)
    batch = sine_system(300, seed=0)
    start, worse, better = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 0.5)
    scores = iter([start] + [worse] * 5 + [better] + [better] * 10)
    monkeypatch.setattr(model, 'eval_score', lambda x, y: next(scores, better))
    res = create_trainer(model, dict(TRAIN, patience=2, max_epochs=30)).fit(batch)
    # 5 worse epochs, the improvement in epoch 6, then 2 epochs of patience.
    assert res.members_improved == 3 and res.epochs == 8 and res.stopped_early
    assert res.val_losses[:6] == [2.0] * 5 + [0.5]


def test_fit_reports_members_improved_and_ranks_num_elites():
    model = create_model(dict(SMALL, num_elites=2), 2, 2, seed=0)
    res = create_trainer(model, dict(TRAIN, max_epochs=3)).fit(sine_system(500, seed=0))
    assert res.members_improved == 3
    assert len(res.elite_indices) == 2 and model.elite_indices == res.elite_indices
    ranked = sorted(range(3), key=lambda k: res.member_val_losses[k])[:2]
    assert sorted(ranked) == res.elite_indices


def test_select_members_copies_the_elites(trained, tmp_path):
    model, _ = trained
    sub = model.select_members([2, 0])
    assert sub.ensemble_size == 2 and sub.elite_indices == [0, 1]
    obs, act = torch.randn(9, 2), torch.randn(9, 2)
    with torch.no_grad():
        full, part = model.predict(obs, act), sub.predict(obs, act)
    for a, b in zip(full, part):
        assert torch.allclose(a[[2, 0]], b)
    # The elite indices travel with a saved model.
    model.set_elites([0, 2])
    try:
        loaded = GaussianEnsemble.load(model.save(tmp_path / 'm'))
    finally:
        model.set_elites(list(range(3)))
    assert loaded.elite_indices == [0, 2]
    with pytest.raises(ValueError, match='bad member indices'):
        model.select_members([0, 0])


@pytest.mark.parametrize('obs_dim,act_dim', [(20, 7), (17, 6), (9, 3)])
def test_input_features_need_the_push_layout(obs_dim, act_dim):
    with pytest.raises(ValueError, match=rf'obs_dim == 17.*act_dim == 7.*got '
                                         rf'obs_dim={obs_dim}, act_dim={act_dim}'):
        create_model(dict(SMALL, input_features='tool_tip'), obs_dim, act_dim)
    create_model(dict(SMALL, input_features='tool_tip'), 17, 7)
    create_model(SMALL, obs_dim, act_dim)  # no features: any layout


def test_transition_batch_reward_and_done_are_optional_for_model_training():
    full = sine_system(300, seed=0)
    batch = TransitionBatch(full.obs, full.act, full.next_obs)
    assert batch.reward is None and batch.done is None
    res = create_trainer(create_model(SMALL, 2, 2), dict(TRAIN, max_epochs=2)).fit(batch)
    assert res.epochs == 2
    assert TransitionBatch.concat([batch, batch]).reward is None
    assert len(TransitionBatch.concat([full, full]).reward) == 600
    with pytest.raises(ValueError, match='1 of 2 batches have no reward'):
        TransitionBatch.concat([full, batch])
    with pytest.raises(ValueError, match='reward has 3 rows, obs has 300'):
        TransitionBatch(full.obs, full.act, full.next_obs, np.zeros(3))
