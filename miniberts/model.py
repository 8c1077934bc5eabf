"""The original BERT (Devlin et al., 2019), as released in the miniatures (Turc et al., 2019).

Post-LayerNorm transformer encoder with learned positions and token types, a tanh pooler, and three heads:
masked LM (decoder tied to the word embeddings, own bias), next-sentence prediction, and sequence
classification/regression. Numerics follow google-research/bert modeling.py (LayerNorm eps 1e-12, init std 0.02,
gelu or its tanh approximation); `transformers` modeling_bert.py is the reference our parity tests compare against.

Two things differ from the reference in *how* it computes, never in *what*:
- Q, K and V come from one fused projection (`attn.qkv`); the checkpoint key maps split and join it.
- Padded batches run "unpadded" (as ModernBERT/MosaicBERT do): the token-wise work (projections, feed-forward,
  LayerNorm) runs only on real tokens, packed into one [T, H] matrix; only attention sees the padded [B, S] layout.
  `unpad=False` gives the plain path; positions that are padding come back as zeros on the unpadded path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import BertConfig
from .errors import MinibertsError


@dataclass
class Packing:
    """Where the real tokens of a padded [B, S] batch are, so token-wise layers can skip the padding."""

    indices: Tensor | None  # [T] flat positions of real tokens in B*S; None = every token is real (nothing to skip)
    batch: int
    seq: int
    key_mask: Tensor | None  # [B, 1, 1, S] True where a key may be attended to; None = no padding at all


def unpad(x: Tensor, indices: Tensor) -> Tensor:
    """[B, S, ...] -> [T, ...]: keep the real tokens only."""
    return x.flatten(0, 1)[indices]


def pad(x: Tensor, indices: Tensor, batch: int, seq: int) -> Tensor:
    """[T, ...] -> [B, S, ...]: put real tokens back in place, zeros where the padding was."""
    out = x.new_zeros(batch * seq, *x.shape[1:])
    out[indices] = x
    return out.view(batch, seq, *x.shape[1:])


def make_packing(attention_mask: Tensor | None, batch: int, seq: int, unpadded: bool) -> Packing:
    if attention_mask is None or bool(attention_mask.all()):
        return Packing(None, batch, seq, None)  # no padding: SDPA may use its fastest kernel with no mask
    key_mask = attention_mask.bool()[:, None, None, :]
    indices = attention_mask.flatten().nonzero().squeeze(1) if unpadded else None
    return Packing(indices, batch, seq, key_mask)


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

    def forward(self, input_ids: Tensor, token_type_ids: Tensor, packing: Packing) -> Tensor:
        b, s = input_ids.shape
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
        if packing.indices is not None:
            qkv = pad(qkv, packing.indices, packing.batch, packing.seq)  # attention needs the [B, S] layout
        b, s, three_h = qkv.shape
        head_dim = three_h // 3 // self.num_heads
        q, k, v = qkv.view(b, s, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B, heads, S, head_dim]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=packing.key_mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(b, s, three_h // 3)  # [B, S, H]
        if packing.indices is not None:
            y = unpad(y, packing.indices)  # [T, H]
        return self.out(y)


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
        self.unpad = True  # skip the padding in token-wise layers; False = the plain padded path
        init_weights(self, cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None):
        b, s = input_ids.shape
        if s > self.cfg.max_position_embeddings:
            raise MinibertsError(f"sequence length {s} exceeds the model's {self.cfg.max_position_embeddings} positions")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        packing = make_packing(attention_mask, b, s, self.unpad)
        x = self.embeddings(input_ids, token_type_ids, packing)
        for layer in self.layers:
            x = layer(x, packing)
        if packing.indices is not None:
            x = pad(x, packing.indices, b, s)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


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
