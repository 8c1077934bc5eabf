"""General distillation: the pre-training objective that matches a frozen teacher's token representations.

TinyBERT's general stage (Jiao et al. 2020, section 3.1, eq. 8 and 10): on generic text, the student's hidden states
(the embedding output included) are mapped uniformly onto the teacher's layers, student layer i <- teacher layer
round(i * Lt / Ls), and matched by mean squared error through one learned linear map W_h: H_s -> H_t shared by all
layers. Unlike masked LM, every real token carries a dense target, not 15% of them.

Left out: TinyBERT's attention-score loss, which matches each student head's attention to one teacher head and so
needs equal head counts (Tiny has 2 heads, MiniLM-L6 12).

The map W_h trains with the student and is saved in the pre-training checkpoints (for exact resume) but not in the
saved student. The teacher runs in eval mode under no_grad; the losses are computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import load_encoder
from ..device import autocast
from ..errors import MinibertsError
from ..model import BertForPreTraining, BertModel, init_weights
from ..tokenizer import WordPieceTokenizer
from .distill_targets import check_same_vocab

OBJECTIVES = ("mlm", "general-distill")


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer learns from, embeddings (0) included: i -> round(i * Lt / Ls)."""
    return [round(i * teacher_layers / student_layers) for i in range(student_layers + 1)]


@dataclass
class Teacher:
    model: BertModel  # frozen, eval mode
    layers: list[int]  # the teacher layer of each student layer (`layer_map`)


def load_teacher(teacher: str, tokenizer: WordPieceTokenizer, seq_len: int, student_layers: int) -> Teacher:
    """The frozen teacher encoder (eval mode, no gradients): the student's vocabulary, positions for --seq-len."""
    if not teacher:
        raise MinibertsError("--objective general-distill needs --teacher DIR (a model directory with the student's "
                             "vocabulary)")
    model, teacher_tok = load_encoder(teacher)
    check_same_vocab(teacher_tok, tokenizer)
    if seq_len > model.cfg.max_position_embeddings:
        raise MinibertsError(f"--seq-len {seq_len} exceeds the {model.cfg.max_position_embeddings} positions of the "
                             f"teacher {teacher}")
    return Teacher(model.eval().requires_grad_(False), layer_map(student_layers, model.cfg.num_layers))


class ProjectedStudent(nn.Module):
    """The student's hidden states at every layer, projected to the teacher's width by one shared linear map.
    The module the optimizer (and DDP) train; the teacher stays outside it."""

    def __init__(self, student: BertForPreTraining, teacher_hidden: int):
        super().__init__()
        self.student = student
        self.projection = init_weights(nn.Linear(student.cfg.hidden_size, teacher_hidden),
                                       student.cfg.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> list[Tensor]:
        states = self.student.bert.hidden_states(input_ids, attention_mask, token_type_ids)
        return [self.projection(h) for h in states]  # (Ls + 1) x [B, S, H_t]


def hidden_loss_sum(net: nn.Module, teacher: Teacher, batch: dict, device: torch.device, dtype: torch.dtype
                    ) -> Tensor:
    """Squared error of the projected student states against the mapped teacher states, summed over the batch's real
    tokens and averaged over layers and hidden units (float32): divided by the token count, the per-token MSE."""
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with autocast(device, dtype):
        with torch.no_grad():
            targets = teacher.model.hidden_states(ids, mask, types)
        projected = net(ids, mask, types)
    real = mask.bool()
    total = torch.zeros((), device=ids.device)
    for student_h, t in zip(projected, teacher.layers):
        s, target = student_h[real].float(), targets[t][real].float()  # [T, H_t]
        total = total + F.mse_loss(s, target, reduction="sum") / target.shape[-1]
    return total / len(teacher.layers)


@torch.no_grad()
def evaluate(net: ProjectedStudent, teacher: Teacher, batches: list[dict], device: torch.device, dtype: torch.dtype
             ) -> dict:
    """Held-out hidden-state loss: the per-token MSE (the training loss) on the fixed held-out sequences."""
    was_training = net.training
    net.eval()
    total = tokens = 0.0
    for batch in batches:
        b = {k: v.to(device) for k, v in batch.items()}
        total += hidden_loss_sum(net, teacher, b, device, dtype).item()
        tokens += b["attention_mask"].sum().item()
    net.train(was_training)
    return {"hidden_loss": total / max(tokens, 1.0)}
