"""L2L comparator of the digits experiment: a meta-trained LSTM optimizer.

Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient descent". The
optimizer is a coordinatewise two-layer LSTM (HIDDEN = 20 units per layer) followed by a linear
map to one number: its weights are shared by all coordinates of the optimizee, and every
coordinate carries its own hidden and cell states. At step t it reads the optimizee's gradient
g_t, preprocessed as in the paper's appendix into two inputs per coordinate,
    (log|g| / p, sign g)   if |g| >= exp(-p),   else   (-1, exp(p) g),   with p = 10,
and proposes the update theta_{t+1} = theta_t + OUT_SCALE * LSTM(g_t), OUT_SCALE = 0.1.

Meta-training (`meta_train`): each trajectory trains a fresh optimizee on one of META_TASKS (binary
digit pairs, none of them an evaluation pair of digits.TASKS) for TRAJECTORY steps, cut into
truncated-BPTT unrolls of UNROLL = 20 steps. One meta-iteration is one unroll: meta-loss = sum of
the optimizee's training losses f(theta_1) .. f(theta_20) of the unroll, then one Adam step
(META_LR = 1e-3) on the LSTM's weights; parameters and LSTM states are detached between unrolls.
The optimizee's gradient is computed without a graph (the paper's first-order assumption
d grad f / d phi = 0), so the meta-gradient flows only through the parameter updates and the
LSTM's states.

Evaluation (`run_task`): the frozen LSTM trains a fresh optimizee on a task's batch stream with the
same prequential loss (before the update), stopping rule (mean of the last WINDOW losses < TOL,
cap max_steps) and held-out accuracy (logit > 0) as digits.run_task.

As in the paper: architecture, preprocessing, output scale, unroll length, meta-optimizer and
its rate, sum-of-losses meta-objective, first-order gradient trick, 100-step trajectories (their
MNIST horizon).
Different from the paper: the optimizee is the digits experiment's MLP 64-32(ReLU)-1 with the
logistic loss on 8x8 digit pairs, batches of 10 (theirs: MNIST, 20-unit sigmoid MLP, batches of
128, softmax over 10 classes); the meta-training tasks are other digit pairs, not the same task
with new initial parameters; the meta-training is short (300 unrolls = 60 trajectories by
default, far fewer than the paper's), with no search over its rate and no selection of the
meta-trained optimizer on validation tasks. The output layer starts at zero (OUT_ZERO_INIT; the
LSTM itself has PyTorch's default initialisation): with the default initialisation the untrained
LSTM emits a nearly constant update that drives the optimizee's loss to tens, after which the
meta-training sat on a "do nothing" plateau (loss 0.69) for all remaining iterations with seed 1
(and until iteration ~240 of 300 with seed 0). Starting from the zero update, seeds 0..4 all
meta-trained to an optimizer that reaches the threshold on every evaluation task (clipping the
meta-gradient norm at 1 fixed seeds 0..2 as well; not kept). Float32 throughout (PyTorch's
default).

Time, single thread, 2-core development machine: meta_train(seed, 300) 30-35 s (6000 optimizee
steps with backpropagation through the unrolls; the test's quick=True ~2 s); run_task ~4 ms per
batch, i.e. ~0.1 s to the threshold, ~8 s if it runs to the 2000-batch cap.

Torch is imported inside the functions only, so this module imports without it (`available`).
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from .digits import TOL, WINDOW, stream, task_data

TORCH_MISSING = "L2L skipped: needs torch (pip install -e '.[l2l]')"

# Pairs with a digit in 6..9 or mixed pairs; never (0, 1), (2, 3) or (4, 5).
META_TASKS = ((6, 7), (8, 9), (6, 9), (7, 8), (6, 8), (7, 9), (1, 7), (3, 8))
HIDDEN_OPTIMIZEE = 32  # the digits experiment's network: n_in -> 32 (ReLU) -> 1
HIDDEN = 20
PREPROC_P = 10.0
OUT_SCALE = 0.1
UNROLL = 20
TRAJECTORY = 100
META_LR = 1e-3
QUICK_ITERATIONS = 10
# The untrained LSTM then proposes zero updates instead of a drift that blows up the optimizee.
OUT_ZERO_INIT = True


def available() -> str | None:
    try:
        import torch  # noqa: F401
    except Exception:  # a broken install must not break the experiment either
        return TORCH_MISSING
    return None


def _net():
    import torch
    return torch.nn.ModuleDict({"lstm1": torch.nn.LSTMCell(2, HIDDEN),
                                "lstm2": torch.nn.LSTMCell(HIDDEN, HIDDEN),
                                "out": torch.nn.Linear(HIDDEN, 1)})


def _zero_state(n):
    import torch
    return tuple(torch.zeros(n, HIDDEN) for _ in range(4))


def _propose(net, grad, state):
    """One update for every coordinate (the coordinates are the LSTM's batch)."""
    import torch
    mag = grad.abs()
    big = mag >= math.exp(-PREPROC_P)
    log_mag = mag.clamp_min(math.exp(-PREPROC_P)).log() / PREPROC_P
    x = torch.stack([torch.where(big, log_mag, -1.0),
                     torch.where(big, grad.sign(), grad * math.exp(PREPROC_P))], dim=1)
    h1, c1 = net["lstm1"](x, state[0:2])
    h2, c2 = net["lstm2"](h1, state[2:4])
    return OUT_SCALE * net["out"](h2)[:, 0], (h1, c1, h2, c2)


def _sizes(n_inputs: int):
    return (n_inputs, HIDDEN_OPTIMIZEE, 1)


def _init(rng, n_inputs: int):
    """Fresh optimizee as one flat float32 vector: He-normal hidden layer, 1/sqrt(n_in) output
    layer, zero biases (the digits experiment's network)."""
    import torch
    parts = []
    sizes = _sizes(n_inputs)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        std = math.sqrt((2.0 if i < len(sizes) - 2 else 1.0) / n_in)
        parts += [rng.normal(0.0, std, n_out * n_in), np.zeros(n_out)]
    return torch.tensor(np.concatenate(parts), dtype=torch.float32)


def _logits(theta, X):
    import torch
    h, k = X, 0
    sizes = _sizes(X.shape[1])
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = theta[k:k + n_out * n_in].view(n_out, n_in)
        b = theta[k + n_out * n_in:k + n_out * (n_in + 1)]
        k += n_out * (n_in + 1)
        h = h @ W.T + b
        if i < len(sizes) - 2:
            h = torch.relu(h)
    return h


def _loss_grad(theta, batch):
    """Mean logistic loss of the batch at theta (graph kept for the meta-loss) and its gradient
    (no graph: second derivatives are not backpropagated, as in the paper)."""
    import torch
    X, y = (torch.as_tensor(a, dtype=torch.float32) for a in batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(_logits(theta, X), y)
    # a non-leaf theta depends on the LSTM: the meta-loss backpropagates through this graph later
    grad, = torch.autograd.grad(loss, theta, retain_graph=theta.grad_fn is not None)
    return loss, grad


def meta_train(seed: int, iterations: int = 300, quick: bool = False,
               mnist: str | None = None) -> dict:
    """Meta-train the LSTM for `iterations` unrolls (QUICK_ITERATIONS if quick) on META_TASKS
    of the digits data (MNIST when `mnist` names its directory); returns its state_dict as
    numpy arrays, the meta-loss (sum over the unroll) of every iteration and the wall time."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 2016])
    if quick:
        iterations = min(iterations, QUICK_ITERATIONS)
    tasks = {pair: task_data(pair, seed, mnist)[:2] for pair in META_TASKS}
    t0 = time.perf_counter()
    net = _net()
    if OUT_ZERO_INIT:
        with torch.no_grad():
            net["out"].weight.zero_()
            net["out"].bias.zero_()
    opt = torch.optim.Adam(net.parameters(), lr=META_LR)
    meta_losses = []
    while len(meta_losses) < iterations:
        X, y = tasks[META_TASKS[rng.integers(len(META_TASKS))]]
        batches = stream(X, y, int(rng.integers(2**31)))
        theta = _init(rng, X.shape[1]).requires_grad_()
        state = _zero_state(len(theta))
        _, grad = _loss_grad(theta, next(batches))
        for _ in range(min(TRAJECTORY // UNROLL, iterations - len(meta_losses))):
            meta = 0.0
            for _ in range(UNROLL):
                update, state = _propose(net, grad, state)
                theta = theta + update
                loss, grad = _loss_grad(theta, next(batches))
                meta = meta + loss
            opt.zero_grad()
            meta.backward()
            opt.step()
            meta_losses.append(float(meta.detach()))
            # truncated BPTT: the next unroll starts from here without a path back
            theta = theta.detach()
            state = tuple(s.detach() for s in state)
    return {"state": {k: v.detach().numpy().copy() for k, v in net.state_dict().items()},
            "meta_losses": meta_losses, "seconds": time.perf_counter() - t0}


def run_task(trained: dict, data, seed: int, max_steps: int) -> dict:
    """The frozen LSTM trains a fresh optimizee (initialised from `seed`) on stream(Xtr, ytr,
    seed); stopping rule, prequential loss and accuracy as digits.run_task."""
    import torch
    torch.set_num_threads(1)
    net = _net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in trained["state"].items()})
    Xtr, ytr, Xte, yte = data
    theta = _init(np.random.default_rng([seed, 1]), Xtr.shape[1]).requires_grad_()
    state = _zero_state(len(theta))
    recent = deque(maxlen=WINDOW)
    curve = []
    reached = False
    for batch in stream(Xtr, ytr, seed):
        if len(curve) >= max_steps:
            break
        loss, grad = _loss_grad(theta, batch)
        curve.append(float(loss.detach()))
        recent.append(curve[-1])
        reached = len(recent) == WINDOW and np.mean(recent) < TOL
        if reached:
            break
        with torch.no_grad():
            update, state = _propose(net, grad, state)
        theta = (theta.detach() + update).requires_grad_()
    with torch.no_grad():
        logits = _logits(theta, torch.as_tensor(Xte, dtype=torch.float32))[:, 0].numpy()
    acc = float(((logits > 0) == (yte[:, 0] > 0.5)).mean())
    return {"steps": len(curve) if reached else None, "accuracy": acc, "curve": np.array(curve)}
