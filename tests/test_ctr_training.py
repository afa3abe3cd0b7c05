"""Utils/ctr_training.py: the two learning-rate schedules on a validation plateau, with the
validation AUC scripted so that each epoch's learning rate, the stopping epoch and the restored
weights are known in advance."""

import pytest
import torch
from torch import nn

import Utils.ctr_training as ctr_training


class Counter(nn.Module):
    """One weight that each Adam step moves; `loss` is what the training loop calls."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, sparse, dense=None):
        return self.w.expand(len(sparse))

    def loss(self, logits, labels):
        return -logits.sum()  # pushes w up by about lr per Adam step


class Rows:
    """The slice of a CTRDataset the loop reads: one batch per epoch."""

    def batches(self, batch_size, generator=None, shuffle=True):
        yield {"sparse": torch.zeros(2, 1, dtype=torch.long), "label": torch.ones(2)}

    def num_batches(self, batch_size):
        return 1


def scripted(monkeypatch, aucs):
    """Validation AUC of the k-th evaluation = aucs[k]; returns the learning rate seen in each
    epoch's step and the weight at each evaluation."""
    lrs, weights, calls = [], [], iter(aucs)
    model = Counter()
    original_loss = model.loss

    def loss(logits, labels):
        lrs.append(opt_lr[0]())
        return original_loss(logits, labels)

    model.loss = loss
    opt_lr = [None]
    real_adam = torch.optim.Adam

    def adam(*a, **k):
        opt = real_adam(*a, **k)
        opt_lr[0] = lambda: opt.param_groups[0]["lr"]
        return opt

    monkeypatch.setattr(torch.optim, "Adam", adam)

    def metrics(m, ds, device):
        weights.append(m.w.item())
        return {"AUC": next(calls)}

    monkeypatch.setattr(ctr_training, "ctr_metrics", metrics)
    return model, lrs, weights


def test_plateau_schedule_divides_after_every_epoch_without_gain_and_goes_on(monkeypatch):
    # gains at epochs 1, 2, 4; none at 3, 5, 6 -> lr/10 after 3 and after 5; two in a row stop at 6
    model, lrs, weights = scripted(monkeypatch, [0.5, 0.6, 0.55, 0.65, 0.6, 0.6, 0.9])
    phases = ctr_training.train_ctr_model(model, Rows(), Rows(), epochs=20, batch_size=2, lr=1e-3,
                                          device="cpu", schedule="plateau", progress=False)
    assert len(phases) == 1 and len(phases[0].epochs) == 6
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert phases[0].best_epoch == 4 and model.w.item() == pytest.approx(weights[3])
    assert weights[2] > weights[1]  # it went on from the current weights, not the best


def test_restart_schedule_goes_back_to_the_best_state_at_a_tenth(monkeypatch):
    # phase 1 (patience 2) stops after epoch 4; phase 2 restarts from epoch 2's weights at lr/10,
    # gains once (epoch 5) and stops at its first epoch without a gain (patience 1)
    model, lrs, weights = scripted(monkeypatch, [0.5, 0.6, 0.55, 0.58, 0.7, 0.65])
    phases = ctr_training.train_ctr_model(model, Rows(), Rows(), epochs=20, batch_size=2, lr=1e-3,
                                          device="cpu", schedule="restart", progress=False)
    assert [len(p.epochs) for p in phases] == [4, 2]
    assert lrs == pytest.approx([1e-3] * 4 + [1e-4] * 2)
    step = weights[1] - weights[0]  # one step at lr 1e-3
    assert weights[4] == pytest.approx(weights[1] + step / 10, rel=0.05)  # from epoch 2's state
    assert model.w.item() == pytest.approx(weights[4])


def test_without_lr_decay_the_plateau_schedule_keeps_the_rate(monkeypatch):
    model, lrs, _ = scripted(monkeypatch, [0.5, 0.4, 0.4])
    ctr_training.train_ctr_model(model, Rows(), Rows(), epochs=20, batch_size=2, lr=1e-3,
                                 device="cpu", schedule="plateau", lr_decay=False, progress=False)
    assert lrs == pytest.approx([1e-3] * 3)


def test_grad_clip_reaches_every_phase_and_a_bad_schedule_is_refused(monkeypatch):
    seen = []
    real_fit = ctr_training.fit

    def fit(*a, **k):
        seen.append(k["grad_clip"])
        return real_fit(*a, **k)

    monkeypatch.setattr(ctr_training, "fit", fit)
    model, _, _ = scripted(monkeypatch, [0.5, 0.4, 0.4, 0.3, 0.3])
    ctr_training.train_ctr_model(model, Rows(), Rows(), epochs=20, batch_size=2, lr=1e-3,
                                 device="cpu", grad_clip=10.0, progress=False)
    assert seen == [10.0, 10.0]
    with pytest.raises(ValueError, match="schedule='cosine'; expected 'restart' or 'plateau'"):
        ctr_training.train_ctr_model(model, Rows(), Rows(), epochs=2, batch_size=2, lr=1e-3,
                                     device="cpu", schedule="cosine", progress=False)
