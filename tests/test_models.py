"""The models as the book draws them: shapes, causality, and what each recurrence can see."""

from __future__ import annotations

import pytest
import torch

from rnnexp.models import MLPBag, MLPWindow, RNNFinal, RNNHidden, RNNOutput
from tests.conftest import SEQUENCE, STEP, feature_io, token_io

B, T = 3, 7
# every size is a required keyword (its default lives in the schema): small ones here
SMALL_MODEL = dict(embed_dim=6, hidden_size=8)
FUSED = dict(SMALL_MODEL, cell="rnn", layers=1, dropout=0.0, forget_bias=None)
MLP = dict(SMALL_MODEL, layers=2, dropout=0.0)

PER_STEP = {
    "rnn_hidden": lambda io: RNNHidden(io, **FUSED),
    "rnn_hidden_lstm": lambda io: RNNHidden(io, **{**FUSED, "cell": "lstm", "layers": 2}),
    "rnn_output": lambda io: RNNOutput(io, **SMALL_MODEL),
    "mlp_window": lambda io: MLPWindow(io, window=3, **MLP),
    "mlp_bag": lambda io: MLPBag(io, **MLP),
}
PER_SEQUENCE = {
    "rnn_final": lambda io: RNNFinal(io, **FUSED),
    "rnn_final_gru": lambda io: RNNFinal(io, **{**FUSED, "cell": "gru", "layers": 2}),
    "mlp_window": lambda io: MLPWindow(io, window=3, **MLP),
    "mlp_bag": lambda io: MLPBag(io, **MLP),
}


def _inputs(io, requires_grad=False):
    if io.vocab_size is not None:
        return torch.randint(io.vocab_size, (B, T))
    return torch.randn(B, T, io.n_features, requires_grad=requires_grad)


@pytest.mark.parametrize("name", PER_STEP)
@pytest.mark.parametrize(
    "io", [token_io(STEP), feature_io(STEP), feature_io(STEP, classes=None)], ids=["tokens", "features", "regression"]
)
def test_per_step_models_output_every_step(name, io):
    out = PER_STEP[name](io)(_inputs(io))
    assert out.shape == (B, T, io.n_outputs)


@pytest.mark.parametrize("name", PER_SEQUENCE)
@pytest.mark.parametrize(
    "io",
    [token_io(SEQUENCE), feature_io(SEQUENCE), feature_io(SEQUENCE, classes=None)],
    ids=["tokens", "features", "regression"],
)
def test_per_sequence_models_output_once(name, io):
    out = PER_SEQUENCE[name](io)(_inputs(io))
    assert out.shape == (B, io.n_outputs)


def _input_gradient(model, x, t):
    """d out[:, t] / d x, summed over the batch and features: (T,)."""
    x = x.clone().requires_grad_(True)
    model(x)[:, t].sum().backward()
    return x.grad.abs().sum(dim=(0, 2))


@pytest.mark.parametrize("name", PER_STEP)
def test_per_step_output_has_no_gradient_from_future_inputs(name):
    torch.manual_seed(0)
    io = feature_io(STEP, classes=None)  # a real-valued output: pattern 2 feeds it back with gradient
    model = PER_STEP[name](io)
    x = torch.randn(B, T, io.n_features)
    for t in range(T):
        grad = _input_gradient(model, x, t)
        assert torch.all(grad[t + 1 :] == 0), f"{name}: output at {t} sees the future"
        assert grad[t] > 0, f"{name}: output at {t} ignores its own input"


def test_pattern1_output_depends_on_every_earlier_input():
    torch.manual_seed(0)
    io = feature_io(STEP)
    grad = _input_gradient(RNNHidden(io, **FUSED), torch.randn(B, T, 3), T - 1)
    assert torch.all(grad > 0)


def test_window_baseline_sees_exactly_its_window():
    torch.manual_seed(0)
    io = feature_io(STEP)
    grad = _input_gradient(MLPWindow(io, window=3, **MLP), torch.randn(B, T, 3), 5)
    assert torch.all(grad[3:6] > 0) and torch.all(grad[:3] == 0) and torch.all(grad[6:] == 0)


def test_sequence_window_baseline_sees_the_last_window():
    torch.manual_seed(0)
    io = feature_io(SEQUENCE)
    x = torch.randn(B, T, 3, requires_grad=True)
    MLPWindow(io, window=3, **MLP)(x).sum().backward()
    seen = x.grad.abs().sum(dim=(0, 2))
    assert torch.all(seen[-3:] > 0) and torch.all(seen[:-3] == 0)


def test_bag_baseline_ignores_order():
    torch.manual_seed(0)
    io = token_io(SEQUENCE)
    model = MLPBag(io, **MLP)
    x = torch.randint(5, (B, T))
    assert torch.allclose(model(x), model(x.flip(1)), atol=1e-6)


def test_pattern3_reads_the_whole_sequence():
    torch.manual_seed(0)
    io = feature_io(SEQUENCE)
    x = torch.randn(B, T, 3, requires_grad=True)
    RNNFinal(io, **FUSED)(x).sum().backward()
    assert torch.all(x.grad.abs().sum(dim=(0, 2)) > 0)


# --- pattern 2: recurrence only through the output ----------------------------------------------


def test_pattern2_has_no_hidden_to_hidden_weights():
    model = RNNOutput(token_io(STEP, classes=5), **SMALL_MODEL)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert (8, 8) not in shapes.values()
    assert shapes["W.weight"] == (8, 5)  # output(t-1) -> hidden(t), the only recurrent weights


def test_pattern2_hidden_state_depends_only_on_previous_output():
    """Teacher-forced, h(t) = tanh(b + W y(t-1) + U x(t)): o(t) has gradient from x only at t
    and from the fed-back outputs only at t-1."""
    torch.manual_seed(0)
    io = feature_io(STEP, classes=None)  # real-valued targets, so they can carry gradient
    model = RNNOutput(io, **SMALL_MODEL)
    for t in range(T):
        x = torch.randn(B, T, 3, requires_grad=True)
        y = torch.randn(B, T, requires_grad=True)
        model(x, y)[:, t].sum().backward()
        from_x, from_y = x.grad.abs().sum(dim=(0, 2)), y.grad.abs().sum(dim=0)
        assert from_x[t] > 0 and from_x.sum() == from_x[t]
        if t == 0:
            assert torch.all(from_y == 0)  # y(-1) = 0
        else:
            assert from_y[t - 1] > 0 and from_y.sum() == from_y[t - 1]


def test_pattern2_teacher_forcing_equals_a_step_by_step_loop():
    """All steps at once (no loop over time) gives the same outputs and gradients as feeding the
    true previous output one step at a time."""
    torch.manual_seed(0)
    io = token_io(STEP, vocab=4, classes=3)
    model = RNNOutput(io, **SMALL_MODEL)
    x, y = torch.randint(4, (B, T)), torch.randint(3, (B, T))
    y[:, :2] = -100  # steps with nothing to predict feed back zeros

    parallel = model(x, y)
    loss_parallel = torch.nn.functional.cross_entropy(parallel.reshape(-1, 3), y.reshape(-1), ignore_index=-100)
    grads_parallel = torch.autograd.grad(loss_parallel, list(model.parameters()))

    e, fed = model.embed(x), model.fed_back(y)
    y_prev = torch.zeros(B, 3)
    outputs = []
    for t in range(T):
        outputs.append(model.step(e[:, t], y_prev)[1])
        y_prev = fed[:, t]
    looped = torch.stack(outputs, dim=1)
    loss_looped = torch.nn.functional.cross_entropy(looped.reshape(-1, 3), y.reshape(-1), ignore_index=-100)
    grads_looped = torch.autograd.grad(loss_looped, list(model.parameters()))

    torch.testing.assert_close(parallel, looped)
    for a, b in zip(grads_parallel, grads_looped, strict=True):
        torch.testing.assert_close(a, b)


def test_pattern2_running_free_feeds_back_its_own_outputs():
    """Free-running outputs are exactly the teacher-forced outputs when its own argmax
    predictions are given as the targets: its only memory is its previous output."""
    torch.manual_seed(0)
    io = token_io(STEP, vocab=4, classes=3)
    model = RNNOutput(io, **SMALL_MODEL)
    x = torch.randint(4, (B, T))
    free = model(x)
    torch.testing.assert_close(model(x, free.argmax(-1)), free)


def test_model_refuses_a_task_of_the_wrong_output_kind():
    with pytest.raises(ValueError, match="rnn_final"):
        RNNFinal(token_io(STEP), **FUSED)
    with pytest.raises(ValueError, match="rnn_hidden"):
        RNNHidden(token_io(SEQUENCE), **FUSED)


@pytest.mark.parametrize("name", PER_SEQUENCE)
def test_sequence_models_read_each_padded_sequence_to_its_own_end(name):
    torch.manual_seed(0)
    model = PER_SEQUENCE[name](token_io(SEQUENCE)).eval()
    short, longer = torch.randint(1, 5, (1, 4)), torch.randint(1, 5, (1, 6))
    batch = torch.zeros(2, 6, dtype=torch.long)  # padded with id 0 after each end
    batch[0, :4], batch[1] = short[0], longer[0]
    out = model(batch, lengths=torch.tensor([4, 6]))
    torch.testing.assert_close(out[0], model(short)[0])
    torch.testing.assert_close(out[1], model(longer)[0])


@pytest.mark.parametrize("output, name", [(STEP, n) for n in PER_STEP] + [(SEQUENCE, n) for n in PER_SEQUENCE])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "padded"])
def test_every_model_runs_on_another_device_than_the_cpu(output, name, with_lengths):
    """On the meta device (shapes only, on any machine): a tensor made on a fixed device (the
    CPU) inside a model fails here as it would on a GPU."""
    build = (PER_STEP if output == STEP else PER_SEQUENCE)[name]
    with torch.device("meta"):
        model = build(token_io(output))
        x = torch.randint(5, (B, T))
        lengths = torch.full((B,), T - 2) if with_lengths else None
        y = torch.randint(5, (B, T))
    out = model(x, lengths=lengths)
    assert out.device.type == "meta" and out.shape == ((B, T, 5) if output == STEP else (B, 5))
    if name == "rnn_output":  # trained teacher-forced: that path too
        out = model(x, y=y, lengths=lengths)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["rnn_hidden", "rnn_final"])
def test_forget_bias_sets_the_lstm_forget_gate_in_every_layer_and_nothing_else(name):
    cls, io = (RNNHidden, token_io()) if name == "rnn_hidden" else (RNNFinal, token_io(SEQUENCE))
    H, layers = 6, 2
    kwargs = {**FUSED, "hidden_size": H, "cell": "lstm", "layers": layers}
    torch.manual_seed(0)
    default = cls(io, **kwargs).recurrence
    torch.manual_seed(0)
    set_to_one = cls(io, **{**kwargs, "forget_bias": 1.0}).recurrence
    for layer in range(layers):
        # the gate's bias is the sum of PyTorch's two biases, laid out (input, forget, cell, output)
        one, pytorch = (
            (getattr(m, f"bias_ih_l{layer}") + getattr(m, f"bias_hh_l{layer}"))[H : 2 * H]
            for m in (set_to_one, default)
        )
        assert torch.equal(one, torch.ones(H))
        assert pytorch.abs().max() < 2 / H**0.5 and pytorch.std() > 0  # PyTorch's uniform draw
        for gate in (slice(0, H), slice(2 * H, 4 * H)):
            assert torch.equal(
                getattr(set_to_one, f"bias_ih_l{layer}")[gate], getattr(default, f"bias_ih_l{layer}")[gate]
            )
        assert torch.equal(getattr(set_to_one, f"weight_hh_l{layer}"), getattr(default, f"weight_hh_l{layer}"))
