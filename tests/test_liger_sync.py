"""Liger's fused loss without its host syncs (loratui.train.liger_sync), on a module written as Liger 0.8.5 writes
those two functions (Liger itself needs Triton and a GPU; the bench checks the real one: bench/RESULTS.md)."""

import importlib.util

import pytest
import torch

from loratui.train import liger_sync

FAKE_OPS = '''
import torch


def fused_linear_cross_entropy_forward(_input, weight, target, ce_weight=None, ignore_index=-100,
                                       reduction="mean", return_token_accuracy=False, ce_impl=None):
    logits = _input @ weight.t()
    target_mask = target != ignore_index
    total_n_non_ignore = target_mask.sum().item()
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    if reduction == "mean":
        loss = loss / total_n_non_ignore
    return loss, total_n_non_ignore


def fused_linear_cross_entropy_backward(grad_output, grad_input):
    # If cross entropy is the last layer, grad_output is 1.0. Skip the mul to save time
    if not torch.equal(grad_output, torch.tensor(1.0, device=grad_output.device)):
        grad_input = grad_input * grad_output
    return grad_input
'''


def load(tmp_path, text=FAKE_OPS, name="fake_liger_ops"):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def syncs(monkeypatch):
    """Counts the calls that make the host wait for the card: ``.item()`` and ``torch.equal``."""
    seen = []
    item, equal = torch.Tensor.item, torch.equal
    monkeypatch.setattr(torch.Tensor, "item", lambda self: seen.append("item") or item(self))
    monkeypatch.setattr(torch, "equal", lambda a, b: seen.append("equal") or equal(a, b))
    return seen


def batch():
    torch.manual_seed(0)
    target = torch.tensor([1, 2, -100, 3, -100, 0])
    return torch.randn(6, 8), torch.randn(5, 8), target


def test_a_summed_loss_is_the_same_without_waiting_for_the_count(tmp_path, syncs):
    ops = load(tmp_path)
    x, w, target = batch()
    before, _ = ops.fused_linear_cross_entropy_forward(x, w, target, reduction="sum")
    assert syncs == ["item"]
    assert liger_sync.drop_loss_syncs(ops) == 2
    syncs.clear()
    after, _ = ops.fused_linear_cross_entropy_forward(x, w, target, reduction="sum")
    assert syncs == [] and torch.equal(after, before)


def test_a_mean_loss_still_reads_the_count_it_divides_by(tmp_path, syncs):
    ops = load(tmp_path)
    x, w, target = batch()
    liger_sync.drop_loss_syncs(ops)
    loss, count = ops.fused_linear_cross_entropy_forward(x, w, target, reduction="mean")
    assert count == 4 and syncs == ["item"]
    expected = torch.nn.functional.cross_entropy(x @ w.t(), target, reduction="mean")
    assert torch.allclose(loss, expected)
    syncs.clear()
    _, count = ops.fused_linear_cross_entropy_forward(x, w, target, reduction="sum", return_token_accuracy=True)
    assert count == 4 and syncs == ["item"]  # token accuracy divides by it too


def test_the_backward_multiplies_always_and_gives_the_same_gradient(tmp_path, syncs):
    ops = load(tmp_path)
    liger_sync.drop_loss_syncs(ops)
    grad = torch.randn(6, 8)
    same, scaled = (ops.fused_linear_cross_entropy_backward(torch.tensor(g), grad) for g in (1.0, 0.25))
    assert syncs == []
    assert torch.equal(same, grad) and torch.equal(scaled, grad * 0.25)


def test_another_liger_keeps_its_own_functions(tmp_path):
    fixed = FAKE_OPS.replace("total_n_non_ignore = target_mask.sum().item()", "total_n_non_ignore = target_mask.sum()")
    fixed = fixed.replace("if not torch.equal(grad_output, torch.tensor(1.0, device=grad_output.device)):", "if 1:")
    ops = load(tmp_path, fixed, "fixed_liger_ops")
    forward, backward = ops.fused_linear_cross_entropy_forward, ops.fused_linear_cross_entropy_backward
    assert liger_sync.drop_loss_syncs(ops) == 0
    assert ops.fused_linear_cross_entropy_forward is forward and ops.fused_linear_cross_entropy_backward is backward


def test_applied_once_and_not_at_all_when_turned_off(tmp_path, monkeypatch, syncs):
    ops = load(tmp_path)
    monkeypatch.setattr(liger_sync, "ENABLED", False)
    assert liger_sync.drop_loss_syncs(ops) == 0
    monkeypatch.setattr(liger_sync, "ENABLED", True)
    assert liger_sync.drop_loss_syncs(ops) == 2
    forward = ops.fused_linear_cross_entropy_forward
    assert liger_sync.drop_loss_syncs(ops) == 2 and ops.fused_linear_cross_entropy_forward is forward
