"""Sequence encoders shared by the model zoo.

- ``PackedRNN``: an LSTM/GRU run over each sample's true length, so padding never enters the final
  state. Reusable by any model that needs length-aware RNNs.
- ``AuViSubNet``: Self-MM's audio/vision subnet (packed LSTM -> dropout -> linear) [MMSA SELF_MM.py].
- ``SubNet`` / ``TextSubNet``: MMSA's FeatureNets used by TFN and LMF (MODELS.md 6.1).
- ``time_average``: MMSA's ``need_normalized`` averaging of audio/vision over time (MODELS.md 6.0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def clean_lengths(lengths: torch.Tensor | None, batch: int, max_len: int) -> torch.Tensor:
    """Lengths as a CPU int64 vector clamped to [1, max_len] (packing rejects 0; None means full)."""
    if lengths is None:
        return torch.full((batch,), max_len, dtype=torch.int64)
    return lengths.detach().to("cpu", torch.int64).clamp(1, max_len)


class PackedRNN(nn.Module):
    """A batch-first LSTM or GRU over true lengths.

    ``forward(x, lengths)`` returns ``(outputs, final)``: ``outputs`` (B, T', H*dirs) is zero past
    each length (T' = longest length in the batch) and ``final`` (B, H*dirs) is the last layer's
    final hidden state (both directions concatenated when bidirectional). A zero length is treated
    as 1 (one padded step).

    Unidirectional RNNs run on the zero-filled padded batch and read each sample's state at its last
    valid step: the same numbers as a packed sequence (later steps cannot influence earlier ones),
    but through the fused kernel, about 10x faster on CPU for long audio/vision sequences than the
    per-step loop PyTorch uses for packed input. Bidirectional RNNs are packed
    (``enforce_sorted=False``), because the backward direction must start at each true end.
    """

    def __init__(self, in_size: int, hidden: int, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, cell: str = "lstm") -> None:
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(in_size, hidden, num_layers=num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.out_size = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None,
                return_outputs: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        lens = clean_lengths(lengths, x.shape[0], x.shape[1])
        if self.bidirectional:
            return self._packed(x, lens, return_outputs)
        t_max = int(lens.max())
        lens_dev = lens.to(x.device)
        valid = torch.arange(t_max, device=x.device)[None, :] < lens_dev[:, None]  # (B, T')
        x = torch.where(valid[..., None], x[:, :t_max], torch.zeros((), dtype=x.dtype, device=x.device))
        out = self.rnn(x)[0]
        final = out[torch.arange(x.shape[0], device=x.device), lens_dev - 1]
        if not return_outputs:
            return None, final
        return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device)), final

    def _packed(self, x: torch.Tensor, lens: torch.Tensor,
                return_outputs: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H), in input order
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        outputs = pad_packed_sequence(out, batch_first=True)[0] if return_outputs else None
        return outputs, final


class AuViSubNet(nn.Module):
    """Self-MM audio/vision subnet: ``Linear(Dropout(h_n))`` of a packed LSTM, no activation (MODELS.md 1.2)."""

    def __init__(self, in_size: int, hidden: int, out_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.rnn = PackedRNN(in_size, hidden, num_layers=num_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.linear(self.dropout(self.rnn(x, lengths)[1]))


class SubNet(nn.Module):
    """MMSA FeatureNets ``SubNet``: BatchNorm -> Dropout -> 3 x (Linear, ReLU), in -> h -> h -> h.

    A training batch of one sample normalises with the running statistics instead of failing
    (BatchNorm cannot estimate a variance from one row).
    """

    def __init__(self, in_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_size)
        self.drop = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(in_size, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.linear_3 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            n = self.norm
            x = F.batch_norm(x, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
        else:
            x = self.norm(x)
        y = F.relu(self.linear_1(self.drop(x)))
        y = F.relu(self.linear_2(y))
        return F.relu(self.linear_3(y))


class TextSubNet(nn.Module):
    """MMSA FeatureNets ``TextSubNet``: LSTM over the whole padded sequence, final h_n, Linear (no activation).

    ``inert_dropout=True`` reproduces MMSA, where a 1-layer LSTM forces the dropout on h_n to 0 (AQ);
    ``False`` applies ``dropout`` to h_n as the configs intend.
    """

    def __init__(self, in_size: int, hidden: int, out_size: int, dropout: float = 0.0,
                 inert_dropout: bool = True) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, batch_first=True)
        self.dropout = nn.Dropout(0.0 if inert_dropout else dropout)
        self.linear = nn.Linear(hidden, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(lstm_last_hidden(self.rnn, x)))


def lstm_last_hidden(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """The last layer's h_n of a batch-first LSTM run over the whole (B, T, D) sequence.

    When only the weights need gradients (input features, CPU), a 1-layer unidirectional LSTM is
    unrolled: one GEMM for all input projections, then the recurrence. The result is the same; the
    backward pass skips the input gradient that the fused kernel always computes (~35% faster).
    """
    simple = lstm.num_layers == 1 and not lstm.bidirectional and lstm.bias and not lstm.proj_size
    if not (simple and torch.is_grad_enabled() and not x.requires_grad and not x.is_cuda and x.shape[1] > 0):
        return lstm(x)[1][0][-1]
    gates_in = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)  # (B, T, 4H)
    w_hh = lstm.weight_hh_l0.t()
    h = c = x.new_zeros(x.shape[0], lstm.hidden_size)
    for g_t in gates_in.unbind(1):
        i, f, g, o = torch.addmm(g_t, h, w_hh).chunk(4, dim=1)  # PyTorch gate order: input, forget, cell, output
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def time_average(x: torch.Tensor, lengths: torch.Tensor | None = None, padded_len: int = 0,
                 mode: str = "padded") -> torch.Tensor:
    """Average (B, T, D) over time to (B, D); NaN results become 0 (MMSA ``__normalize``).

    ``mode="padded"`` (MMSA ``need_normalized``): the sum divided by the padded length
    ``max(T, padded_len)``, so padding counts as zeros and the result does not depend on how much a
    loader trimmed the batch. ``mode="true"``: the mean over each sample's true length.
    """
    if mode == "padded":
        y = x.sum(dim=1) / max(x.shape[1], padded_len, 1)
    elif mode == "true":
        lens = clean_lengths(lengths, x.shape[0], x.shape[1]).to(x.device)
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
        y = torch.where(keep[..., None], x, torch.zeros_like(x)).sum(dim=1) / lens[:, None].to(x.dtype)
    else:
        raise ValueError(f"mode must be 'padded' or 'true', got {mode!r}")
    return torch.where(torch.isnan(y), torch.zeros_like(y), y)
