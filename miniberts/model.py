"""The original BERT (Devlin et al., 2019), as released in the miniatures (Turc et al., 2019).

Post-LayerNorm transformer encoder with learned positions and token types, a tanh pooler, and three heads:
masked LM (decoder tied to the word embeddings, own bias), next-sentence prediction, and sequence
classification/regression. Numerics follow google-research/bert modeling.py (LayerNorm eps 1e-12, init std 0.02,
gelu or its tanh approximation); `transformers` modeling_bert.py is the reference our parity tests compare against.

Two things differ from the reference in *how* it computes, never in *what*:
- Q, K and V come from one fused projection (`attn.qkv`); the checkpoint key maps split and join it.
- Padded batches run "unpadded" (as ModernBERT/MosaicBERT do): the token-wise work (projections, feed-forward,
  LayerNorm) runs only on real tokens, packed into one [T, H] matrix. Attention gathers the packed rows into a few
  groups of sequences of similar length (`attention_groups`), each padded only to its own longest member, so a batch
  that arrives with one long sentence among short ones does not pay S_max^2 attention for every row.
  Batches with little padding take the plain path, where skipping it costs more than it saves (UNPAD_MIN_SAVING).
  `unpad=False` always gives the plain path. Padding positions hold zeros on the unpadded path and values on the
  plain one: read only the real positions (attention_mask) of the output.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import BertConfig
from .errors import MinibertsError


@dataclass
class Group:
    """Sequences whose attention runs together: `rows` sequences padded to `seq`, gathered from the packed tokens."""

    rows: int
    seq: int
    gather: Tensor  # [rows * seq] packed-token index of each slot; padding slots repeat a real token of the row
    key_mask: Tensor | None  # [rows, 1, 1, seq] True where a key is real; None when all rows have length `seq`
    real: Tensor | None  # [T_group] the slots holding real tokens, in packed order; None when all are real


@dataclass
class Packing:
    """Where the real tokens of a padded [B, S] batch are, so token-wise layers can skip the padding."""

    indices: Tensor | None  # [T] flat positions of real tokens in B*S; None = every token is real (nothing to skip)
    batch: int
    seq: int
    key_mask: Tensor | None  # padded path: [B, 1, 1, S] True where a key may be attended to; None = no padding
    groups: list[Group] | None = None  # unpadded path: attention per group; the packed order is group by group


def unpad(x: Tensor, indices: Tensor) -> Tensor:
    """[B, S, ...] -> [T, ...]: keep the real tokens only."""
    return x.flatten(0, 1)[indices]


def pad(x: Tensor, indices: Tensor, batch: int, seq: int) -> Tensor:
    """[T, ...] -> [B, S, ...]: put real tokens back in place, zeros where the padding was."""
    out = x.new_zeros(batch * seq, *x.shape[1:])
    out[indices] = x
    return out.view(batch, seq, *x.shape[1:])


# What one more attention group costs (two gathers, the kernel call, the Python around them), in query-key scores:
# GROUP_OVERHEAD / hidden of them (a score costs 4 FLOPs per hidden unit, QK^T and PV). Measured on a Zen 5 core with
# Rotten Tomatoes batches of 32 in arrival order (bf16): anything from 1e5 to 3e6 gives the same speed within 5%
# (Tiny: 3,300 sentences/s at 3e5, 5.6 groups per batch; Small: +35% over one group, Tiny: +90%).
GROUP_OVERHEAD = 3e5


def attention_groups(lengths: list[int], hidden: int) -> list[list[int]]:
    """Rows (longest first, empty rows dropped) split into runs that minimise the padded attention work
    sum(rows * longest^2) plus GROUP_OVERHEAD / hidden per run. An exact dynamic programme: B is small."""
    order = sorted((b for b in range(len(lengths)) if lengths[b] > 0), key=lambda b: -lengths[b])
    overhead = GROUP_OVERHEAD / hidden
    best = [0.0] + [float("inf")] * len(order)  # best[j]: the cheapest split of order[:j]
    cut = [0] * len(best)
    for j in range(1, len(best)):
        for i in range(j):  # the last run is order[i:j]; its longest member is order[i]
            cost = best[i] + (j - i) * lengths[order[i]] ** 2 + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    runs, j = [], len(order)
    while j > 0:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]


# Unpadding moves every real token through gathers and scatters (memory work ~ hidden per token) to skip the padding's
# FLOPs (~ hidden^2 per token), so it pays only when padding share x hidden is large enough. Measured on 2 Zen 5 cores,
# bf16, batches of 16 x 128, training and inference: the break-even lies at 50-100 (Tiny: padded is faster down to a
# 64% fill; Small: unpadded is 1.3x faster at 64% and even at 93%). Sentence batches (fills of 20-40%) always unpad.
UNPAD_MIN_SAVING = 64


def make_packing(attention_mask: Tensor | None, batch: int, seq: int, unpadded: bool, hidden: int) -> Packing:
    if attention_mask is None or bool(attention_mask.all()):
        return Packing(None, batch, seq, None)  # no padding: SDPA may use its fastest kernel with no mask
    mask = attention_mask.bool()
    padded = Packing(None, batch, seq, mask[:, None, None, :])
    if not unpadded:
        return padded
    lengths = mask.sum(1).tolist()
    real = sum(lengths)
    if real == 0 or (1.0 - real / (batch * seq)) * hidden < UNPAD_MIN_SAVING:
        return padded
    # The packed order is group by group, each row's real tokens in order, so that concatenating the groups'
    # attention outputs gives the packed order back without a scatter. Any mask works, not only right padding: a
    # row's real tokens sit left-aligned in its group, which attention cannot tell apart (positions are embedded).
    runs = attention_groups(lengths, hidden)
    rows = torch.tensor([b for run in runs for b in run], device=mask.device)
    r, col = mask[rows].nonzero(as_tuple=True)
    indices = rows[r] * seq + col  # [T]
    row_lengths = torch.tensor([lengths[b] for run in runs for b in run], device=mask.device)
    starts = torch.cumsum(row_lengths, 0) - row_lengths  # packed offset of each row
    groups, first = [], 0
    for run in runs:
        n, longest = len(run), lengths[run[0]]
        lens, start = row_lengths[first : first + n, None], starts[first : first + n, None]  # [n, 1]
        slot = torch.arange(longest, device=mask.device)
        real = slot < lens  # [n, longest]
        gather = torch.where(real, start + slot, start).flatten()
        if lengths[run[-1]] == longest:
            groups.append(Group(n, longest, gather, None, None))
        else:
            groups.append(Group(n, longest, gather, real[:, None, None, :], real.flatten().nonzero().squeeze(1)))
        first += n
    return Packing(indices, batch, seq, None, groups)


# Attention kernels on CUDA: not cuDNN's, which builds an execution plan for every new input shape. Sentences come in
# every length, so a server met new shapes all the time: on an H200, a MiniLM-L6-sized model ran 53 one-sentence calls
# a second and 165 sentences/s in passes of 64 over shapes it had not met, against 282 and 2,494 without cuDNN's
# kernel (1,024 real sentences; once every shape was met, 148-351 and 2,612-3,319 either way).
CUDA_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def activation(name: str) -> nn.Module:
    return nn.GELU(approximate="tanh" if name == "gelu_tanh" else "none")


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, packing: Packing,
                positions: Tensor | None = None) -> Tensor:
        b, s = input_ids.shape
        if positions is None:
            positions = torch.arange(s, device=input_ids.device).expand(b, s)
        if packing.indices is not None:  # embed the real tokens only: [T]
            input_ids, token_type_ids, positions = (unpad(t, packing.indices) for t in (input_ids, token_type_ids, positions))
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # fused [query; key; value]
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout

    def forward(self, x: Tensor, packing: Packing) -> Tensor:
        qkv = self.qkv(x)  # [B, S, 3H] or packed [T, 3H]
        if packing.groups is None:
            return self.out(self._attend(qkv, packing.key_mask))
        parts = []
        for g in packing.groups:
            y = self._attend(qkv.index_select(0, g.gather).view(g.rows, g.seq, -1), g.key_mask)  # [rows, seq, H]
            y = y.flatten(0, 1)
            parts.append(y if g.real is None else y.index_select(0, g.real))
        return self.out(torch.cat(parts) if len(parts) > 1 else parts[0])  # [T, H]

    def _attend(self, qkv: Tensor, key_mask: Tensor | None) -> Tensor:
        """[B, S, 3H] -> [B, S, H]"""
        b, s, three_h = qkv.shape
        head_dim = three_h // 3 // self.num_heads
        q, k, v = qkv.view(b, s, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B, heads, S, head_dim]
        with sdpa_kernel(CUDA_ATTENTION) if q.is_cuda else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                               dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(b, s, three_h // 3)


class Layer(nn.Module):
    """Post-LN block: x = norm1(x + attn(x)); x = norm2(x + mlp(x))."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: Tensor, packing: Packing) -> Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, packing)))
        return self.norm2(x + self.dropout(self.proj(self.act(self.fc(x)))))


class BertModel(nn.Module):
    """Encoder + pooler. forward -> (hidden [B, S, H], pooled [B, H])."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.unpad = True  # skip the padding in token-wise layers where it pays (UNPAD_MIN_SAVING); False = never
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None):
        x = self.hidden_states(input_ids, attention_mask, token_type_ids, every_layer=False)[-1]
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                      token_type_ids: Tensor | None = None, every_layer: bool = True) -> list[Tensor]:
        """[embedding output, layer 1, ..., layer L] outputs, each [B, S, H] (TinyBERT's hidden-state targets);
        only the last one unless `every_layer`."""
        b, s = input_ids.shape
        if s > self.cfg.max_position_embeddings:
            raise MinibertsError(f"sequence length {s} exceeds the model's {self.cfg.max_position_embeddings} positions")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        packing = make_packing(attention_mask, b, s, self.unpad, self.cfg.hidden_size)
        x = self.embeddings(input_ids, token_type_ids, packing)
        kept = [x]
        for layer in self.layers:
            x = layer(x, packing)
            kept = kept + [x] if every_layer else [x]  # inference holds one layer's output at a time
        if packing.indices is not None:
            kept = [pad(h, packing.indices, b, s) for h in kept]
        return kept

    def packed_hidden(self, input_ids: Tensor, token_type_ids: Tensor, position_ids: Tensor, segment_ids: Tensor
                      ) -> Tensor:
        """The last hidden states [B, S, H] of rows that each hold several sequences one after another (sequence
        packing: a server's short sentences fill a few rows instead of padding many). `segment_ids` [B, S] numbers the
        sequences of a row from 1 (0: padding) and a token attends only to its own sequence's tokens; `position_ids`
        restart at 0 with each sequence. Every sequence gets the hidden states it gets alone, up to rounding. A
        sequence's [CLS] is its first token: pool outside (inference/packing.py)."""
        mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # [B, 1, S, S]; padding sees padding
        packing = Packing(None, *input_ids.shape, mask)
        x = self.embeddings(input_ids, token_type_ids, packing, position_ids)
        for layer in self.layers:
            x = layer(x, packing)
        return x


class MaskedLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder tied to the word embeddings, plus its own bias."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


class BertForPreTraining(nn.Module):
    """Masked LM (+ optional next-sentence prediction). The vocabulary projection is most of a small model's
    compute, so pass `mlm_positions` (a [B, S] bool mask) to score only the masked tokens."""

    def __init__(self, cfg: BertConfig, nsp: bool = False):
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.mlm = MaskedLMHead(cfg)
        self.nsp = nn.Linear(cfg.hidden_size, 2) if nsp else None
        init_weights(self.mlm, cfg.initializer_range)
        if self.nsp is not None:
            init_weights(self.nsp, cfg.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, mlm_positions: Tensor | None = None):
        hidden, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        if mlm_positions is not None:
            hidden = hidden[mlm_positions]  # [N masked, H]
        mlm_logits = self.mlm(hidden, self.bert.embeddings.word.weight)
        nsp_logits = self.nsp(pooled) if self.nsp is not None else None
        return mlm_logits, nsp_logits


class BertForSequenceClassification(nn.Module):
    """Classification (cfg.id2label) or regression (cfg.regression) on the pooled [CLS] output."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        if cfg.num_labels < 1:
            raise MinibertsError("a classifier needs cfg.id2label (class names) or cfg.regression=True")
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.classifier = init_weights(nn.Linear(cfg.hidden_size, cfg.num_labels), cfg.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(pooled))  # [B, num_labels]


def init_weights(model: nn.Module, std: float) -> nn.Module:
    """BERT's initialisation: N(0, std) for weights, zero biases, unit LayerNorm."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model
