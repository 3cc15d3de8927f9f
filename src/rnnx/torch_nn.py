"""Recurrent layers in plain torch, for what nn.LSTM / nn.GRU / nn.RNN cannot express.

Used by the files `rnnx convert MODEL OUT.py --to torch-model` writes and by rnnx.onnx2torch;
copied into the file with `--standalone`, so it imports nothing but torch. Everything here
works under torch.jit.script.

- `RecurrentLoop`: ONNX LSTM / GRU / RNN semantics one time step at a time: any activation
  with alpha / beta (Keras 2 hard_sigmoid is HardSigmoid(0.2, 0.5)), reset-before GRUs
  (linear_before_reset=0), peepholes, cell clip, input_forget, per-row sequence lengths.
- `FastLSTM`, `FastGRU` (also nn.RNN): the built-in modules behind the same interface, used
  wherever they compute exactly that (sigmoid / tanh gates, reset-after GRU, no lengths).
- `KerasRecurrent`: what a Keras recurrent or Bidirectional layer does around its cell:
  masks as lengths (exact for right-padded batches), go_backwards, return_sequences,
  return_state, merge modes, initial_state and stateful states carried between calls.

Shapes of the shared interface (ONNX layout 0): x [T, B, I], lengths [B] or None,
h0 / c0 [D, B, H] or None -> Y [T, D, B, H], Y_h [D, B, H], Y_c [D, B, H] (GRU / RNN: Y_h again).
Gate blocks are in PyTorch's (= cuDNN's) order: LSTM i, f, g, o; GRU r, z, n; peepholes i, f, o.
"""

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def activation(name: str, alpha: float, beta: float, x: Tensor) -> Tensor:
    """An ONNX recurrent activation by name (HardSigmoid(x) = clip(alpha * x + beta, 0, 1))."""
    if name == "Sigmoid":
        return torch.sigmoid(x)
    if name == "Tanh":
        return torch.tanh(x)
    if name == "Relu":
        return torch.relu(x)
    if name == "HardSigmoid":
        return torch.clamp(alpha * x + beta, 0.0, 1.0)
    if name == "Affine":
        return alpha * x + beta
    if name == "LeakyRelu":
        return torch.where(x >= 0, x, alpha * x)
    if name == "ThresholdedRelu":
        return torch.where(x > alpha, x, torch.zeros_like(x))
    if name == "ScaledTanh":
        return alpha * torch.tanh(beta * x)
    if name == "Elu":
        return torch.where(x >= 0, x, alpha * (torch.exp(torch.clamp(x, max=0.0)) - 1.0))
    if name == "Softsign":
        return x / (1.0 + torch.abs(x))
    if name == "Softplus":
        return F.softplus(x)
    raise RuntimeError("unknown recurrent activation " + name)


GATES = {"lstm": 4, "gru": 3, "rnn": 1}
ACTIVATION_SLOTS = {"lstm": 3, "gru": 2, "rnn": 1}


class RecurrentLoop(nn.Module):
    """ONNX LSTM / GRU / RNN, computed step by step (see the module docstring for shapes)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, direction: str = "forward",
                 activations: Optional[List[str]] = None, alphas: Optional[List[float]] = None,
                 betas: Optional[List[float]] = None, clip: float = 0.0, input_forget: bool = False,
                 peepholes: bool = False, reset_after: bool = True):
        super().__init__()
        if cell not in GATES:
            raise ValueError("cell must be lstm, gru or rnn, not " + repr(cell))
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError("direction must be forward, reverse or bidirectional, not "
                             + repr(direction))
        defaults = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"],
                    "rnn": ["Tanh"]}
        slots = ACTIVATION_SLOTS[cell]
        self.cell = cell
        self.hidden_size = hidden_size
        self.directions = 2 if direction == "bidirectional" else 1
        self.reverse = direction == "reverse"
        self.activations: List[str] = list(activations) if activations else defaults[cell]
        self.alphas: List[float] = [float(a) for a in alphas] if alphas else [0.0] * slots
        self.betas: List[float] = [float(b) for b in betas] if betas else [0.0] * slots
        if len(self.activations) != slots or len(self.alphas) != slots or len(self.betas) != slots:
            raise ValueError(f"a {cell} takes {slots} activations (with alphas and betas)")
        self.clip = float(clip)  # 0: no clip
        self.input_forget = bool(input_forget)
        self.reset_after = bool(reset_after)
        size, D = GATES[cell] * hidden_size, self.directions
        self.weight_ih = nn.Parameter(torch.zeros(D, size, input_size))
        self.weight_hh = nn.Parameter(torch.zeros(D, size, hidden_size))
        self.bias_ih = nn.Parameter(torch.zeros(D, size))
        self.bias_hh = nn.Parameter(torch.zeros(D, size))
        self.peephole = nn.Parameter(torch.zeros(D, 3 * hidden_size if peepholes else 0))

    def _act(self, slot: int, x: Tensor, clipped: bool = True) -> Tensor:
        # ONNX clips the gates' inputs (not the cell state's output activation)
        if clipped and self.clip > 0.0:
            x = torch.clamp(x, -self.clip, self.clip)
        return activation(self.activations[slot], self.alphas[slot], self.betas[slot], x)

    def _step(self, x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh: Tensor,
              peephole: Tensor) -> Tuple[Tensor, Tensor]:
        """One step of one direction: x_proj = W x + b_w of this step, h, c the states before it."""
        if self.cell == "lstm":
            gi, gf, gc, go = (x_proj + F.linear(h, weight_hh, bias_hh)).chunk(4, 1)
            if peephole.numel() > 0:
                pi, pf, po = peephole.chunk(3, 0)
                gi, gf = gi + pi * c, gf + pf * c
            else:
                po = torch.zeros_like(bias_hh[:1])
            i = self._act(0, gi)
            f = 1.0 - i if self.input_forget else self._act(0, gf)
            c = f * c + i * self._act(1, gc)
            o = self._act(0, go + po * c)
            return o * self._act(2, c, False), c
        if self.cell == "gru":
            xr, xz, xn = x_proj.chunk(3, 1)
            hr, hz, hn = weight_hh.chunk(3, 0)
            br, bz, bn = bias_hh.chunk(3, 0)
            r = self._act(0, xr + F.linear(h, hr, br))
            z = self._act(0, xz + F.linear(h, hz, bz))
            if self.reset_after:
                n = self._act(1, xn + r * F.linear(h, hn, bn))
            else:
                n = self._act(1, xn + F.linear(r * h, hn, bn))
            return (1.0 - z) * n + z * h, c
        return self._act(0, x_proj + F.linear(h, weight_hh, bias_hh)), c

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, h0: Optional[Tensor] = None,
                c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        return self.run(x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                        self.peephole, lengths, h0, c0)

    def run(self, x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor,
            peephole: Tensor, lengths: Optional[Tensor] = None, h0: Optional[Tensor] = None,
            c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """forward() with the weights given (shapes as the parameters'; peephole [D, 0]: none)."""
        steps, batch, hidden = x.shape[0], x.shape[1], weight_hh.shape[2]
        state_shape = [self.directions, batch, hidden]
        h_init = x.new_zeros(state_shape) if h0 is None else h0
        c_init = x.new_zeros(state_shape) if c0 is None else c0
        ys: List[Tensor] = []
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        for k in range(self.directions):
            backward = self.reverse or k == 1
            # every step's input part at once
            x_proj = F.linear(x, weight_ih[k], bias_ih[k])
            h, c = h_init[k], c_init[k]
            outputs: List[Tensor] = []
            for s in range(steps):
                t = steps - 1 - s if backward else s
                h_new, c_new = self._step(x_proj[t], h, c, weight_hh[k], bias_hh[k], peephole[k])
                if lengths is None:
                    h, c = h_new, c_new
                    outputs.append(h)
                else:  # rows whose sequence has ended keep their states and output zeros
                    active = (lengths > t).unsqueeze(1)
                    h = torch.where(active, h_new, h)
                    c = torch.where(active, c_new, c)
                    outputs.append(torch.where(active, h, torch.zeros_like(h)))
            if backward:
                outputs.reverse()
            if steps > 0:
                ys.append(torch.stack(outputs, 0))
            else:
                ys.append(x.new_zeros([0, batch, hidden]))
            hs.append(h)
            cs.append(c)
        return torch.stack(ys, 1), torch.stack(hs, 0), torch.stack(cs, 0)


def _per_direction(y: Tensor, directions: int, hidden: int) -> Tensor:
    """[T, B, D * H] as built-in modules return it -> [T, D, B, H]."""
    if directions == 1:
        return y.unsqueeze(1)
    return y.view(y.shape[0], y.shape[1], directions, hidden).transpose(1, 2)


class FastLSTM(nn.Module):
    """nn.LSTM behind RecurrentLoop's interface (sigmoid / tanh gates, no lengths)."""

    def __init__(self, input_size: int, hidden_size: int, direction: str = "forward"):
        super().__init__()
        self.directions = 2 if direction == "bidirectional" else 1
        self.reverse = direction == "reverse"
        self.hidden_size = hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size, bidirectional=self.directions == 2)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, h0: Optional[Tensor] = None,
                c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        if lengths is not None:
            raise RuntimeError("FastLSTM takes no lengths; RecurrentLoop does")
        if self.reverse:
            x = torch.flip(x, [0])
        if h0 is None and c0 is None:
            y, (h, c) = self.lstm(x)
        else:
            state_shape = [self.directions, x.shape[1], self.hidden_size]
            h_init = x.new_zeros(state_shape) if h0 is None else h0
            c_init = x.new_zeros(state_shape) if c0 is None else c0
            y, (h, c) = self.lstm(x, (h_init, c_init))
        if self.reverse:
            y = torch.flip(y, [0])
        return _per_direction(y, self.directions, self.hidden_size), h, c


class FastGRU(nn.Module):
    """nn.GRU (reset-after, sigmoid / tanh) or nn.RNN (tanh or relu) behind RecurrentLoop's
    interface."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, direction: str = "forward",
                 nonlinearity: str = "tanh"):
        super().__init__()
        self.directions = 2 if direction == "bidirectional" else 1
        self.reverse = direction == "reverse"
        self.hidden_size = hidden_size
        if cell == "gru":
            self.rnn = nn.GRU(input_size, hidden_size, bidirectional=self.directions == 2)
        else:
            self.rnn = nn.RNN(input_size, hidden_size, nonlinearity=nonlinearity,
                              bidirectional=self.directions == 2)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, h0: Optional[Tensor] = None,
                c0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        if lengths is not None:
            raise RuntimeError("FastGRU takes no lengths; RecurrentLoop does")
        if self.reverse:
            x = torch.flip(x, [0])
        y, h = self.rnn(x, h0)
        if self.reverse:
            y = torch.flip(y, [0])
        return _per_direction(y, self.directions, self.hidden_size), h, h


class KerasRecurrent(nn.Module):
    """A Keras LSTM / GRU / SimpleRNN (CuDNN layers too) or Bidirectional around one, batch first.

    forward(x [B, T, I], mask [B, T] bool or None, initial states or None) returns the layer's
    outputs as Keras lists them: the sequence or last output (two with merge_mode None), then
    with return_state the final states (h, c per direction, forward first). A time_major layer
    takes x [T, B, I] and returns its sequences [T, B, H], as Keras does (it takes no mask).
    """

    def __init__(self, rnn: nn.Module, cell: str, directions: int = 1, go_backwards: bool = False,
                 return_sequences: bool = False, return_state: bool = False,
                 merge_mode: Optional[str] = "concat",
                 zero_output_for_mask: bool = False, stateful: bool = False,
                 time_major: bool = False):
        super().__init__()
        self.rnn = rnn
        self.is_lstm = cell == "lstm"
        self.directions = directions
        self.go_backwards = go_backwards
        self.return_sequences = return_sequences
        self.return_state = return_state
        # always a str, for torch.jit.script
        self.merge_mode: str = "none" if merge_mode is None else merge_mode
        self.zero_output_for_mask = zero_output_for_mask
        self.stateful = stateful
        self.time_major = time_major
        self.hidden_size = int(getattr(rnn, "hidden_size"))
        # the states a stateful layer carries to its next call; none (batch 0) until the first call
        empty = torch.zeros(directions, 0, self.hidden_size)
        self.register_buffer("state_h", empty, persistent=False)
        self.register_buffer("state_c", empty.clone(), persistent=False)

    @torch.jit.export
    def reset_states(self) -> None:
        """Zero the carried states of a stateful layer (Keras's layer.reset_states())."""
        self.state_h = torch.zeros(self.directions, 0, self.hidden_size)
        self.state_c = torch.zeros(self.directions, 0, self.hidden_size)

    def _merge(self, a: Tensor, b: Tensor) -> List[Tensor]:
        if self.merge_mode == "concat":
            return [torch.cat([a, b], -1)]
        if self.merge_mode == "sum":
            return [a + b]
        if self.merge_mode == "mul":
            return [a * b]
        if self.merge_mode == "ave":
            return [(a + b) * 0.5]
        return [a, b]  # merge_mode None

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                initial_state: Optional[List[Tensor]] = None) -> List[Tensor]:
        lengths: Optional[Tensor] = None
        if mask is not None:
            lengths = mask.to(torch.int64).sum(1)
        per_direction = 2 if self.is_lstm else 1
        h0: Optional[Tensor] = None
        c0: Optional[Tensor] = None
        # initial_state in Keras order: h, c of the forward layer, then of the backward one
        if initial_state is not None:
            h0 = torch.stack([initial_state[d * per_direction] for d in range(self.directions)], 0)
            if self.is_lstm:
                c0 = torch.stack([initial_state[d * per_direction + 1]
                                  for d in range(self.directions)], 0)
        elif self.stateful and self.state_h.shape[1] == x.shape[1 if self.time_major else 0]:
            h0, c0 = self.state_h, self.state_c
        y, h, c = self.rnn(x if self.time_major else x.transpose(0, 1), lengths, h0, c0)
        if self.stateful:
            self.state_h = h.detach()
            self.state_c = c.detach()
        if self.directions == 1:
            if self.return_sequences:
                seq = y[:, 0]
                if self.go_backwards:  # Keras returns the sequence in the order it read it
                    seq = torch.flip(seq, [0])
                elif mask is not None and not self.zero_output_for_mask:
                    # Keras repeats the last kept output over the padding
                    seq = torch.where(mask.transpose(0, 1).unsqueeze(2), seq, h[0].unsqueeze(0))
                outputs = [seq if self.time_major else seq.transpose(0, 1)]
            else:
                outputs = [h[0]]
        elif self.return_sequences:
            if self.time_major:
                outputs = self._merge(y[:, 0], y[:, 1])
            else:
                outputs = self._merge(y[:, 0].transpose(0, 1), y[:, 1].transpose(0, 1))
        else:
            outputs = self._merge(h[0], h[1])
        if self.return_state:
            for d in range(self.directions):
                outputs.append(h[d])
                if self.is_lstm:
                    outputs.append(c[d])
        return outputs


def pad_same(x: Tensor, kernel: int, stride: int, dilation: int, value: float = 0.0) -> Tensor:
    """TensorFlow's 'same' padding of the last axis of x [B, C, L] (the odd pad at the end)."""
    length = x.shape[-1]
    out = (length + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - length, 0)
    return F.pad(x, [total // 2, total - total // 2], value=value)


def avg_pool_same(x: Tensor, size: int, stride: int) -> Tensor:
    """Keras AveragePooling1D(padding='same') on [B, C, L]: the mean of the steps inside."""
    total = F.avg_pool1d(pad_same(x, size, stride, 1), size, stride) * size
    count = F.avg_pool1d(pad_same(torch.ones_like(x[:1, :1]), size, stride, 1), size, stride) * size
    return total / count


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Keras GlobalAveragePooling1D under a mask: the mean of the kept steps of x [B, T, C]."""
    weight = mask.to(x.dtype).unsqueeze(2)
    return (x * weight).sum(1) / weight.sum(1)


class Affine(nn.Module):
    """x * scale + shift: Keras BatchNormalization at inference, its statistics folded in."""

    def __init__(self, shape: List[int]):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(shape))
        self.shift = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class LayerNorm(nn.Module):
    """Keras LayerNormalization over `axes`; gamma / beta shaped to broadcast (empty: unused)."""

    def __init__(self, axes: List[int], epsilon: float, shape: List[int], scale: bool = True,
                 center: bool = True):
        super().__init__()
        self.axes = axes
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.ones(shape if scale else [0]))
        self.beta = nn.Parameter(torch.zeros(shape if center else [0]))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(self.axes, keepdim=True)
        centered = x - mean
        variance = (centered * centered).mean(self.axes, keepdim=True)
        y = centered / torch.sqrt(variance + self.epsilon)
        if self.gamma.numel() > 0:
            y = y * self.gamma
        if self.beta.numel() > 0:
            y = y + self.beta
        return y


def max_pool_same(x: Tensor, size: int, stride: int) -> Tensor:
    """Keras MaxPooling1D(padding='same') on [B, C, L]: padding never wins the max."""
    return F.max_pool1d(pad_same(x, size, stride, 1, -math.inf), size, stride)
