"""The torch backend's batch-without-padding path: a TorchScript trace of the model, frozen, for fewer Python ops
per call where per-op eager overhead is most of the time (batch 1, small models).

Why only without padding: a trace records one branch of the model's Python control flow. For an input whose
attention mask is all ones, `make_packing` takes the mask-free branch (no unpadding, no key mask), and the trace of
that branch is exact for any batch and sequence size with no padding (checked in tests/test_backends.py, bit for
bit). A batch with padding, an autocast context (the trace is fp32) or autograd always runs the eager model.
Measured on a busy 2-core EPYC, 1 thread, 32 tokens at batch 1: Tiny 1.16-1.71 -> 0.81-1.14 ms p50 (~1.4x), MiniLM
~16-19 -> ~15.5 ms (~1.1x); the lead re-measures with `miniberts bench`.

The trace is not free: tracing and freezing MiniLM took ~2.7 s, and TorchScript's profiling executor spends the
next call or two optimising the graph. So the trace is made only after TRACE_AFTER mask-free calls, when the model
is evidently serving many unpadded requests; a one-off `embed` of a few lines never pays for it.

TorchScript is deprecated since torch 2.9 in favour of torch.compile, but still ships and works in 2.13 (its
DeprecationWarning is silenced here, as inference/export.py does for the TorchScript ONNX exporter). torch.compile of this
model takes ~1 minute on a 2-core CPU and recompiles per shape (tests/test_fast_paths.py::test_compile_equals_eager),
too much for the batch-1 path it is meant to speed up.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

TRACE_AFTER = 16  # mask-free calls run eager before the trace is made (its cost is ~100 MiniLM batch-1 calls)


class MaskFreeTrace(nn.Module):
    """`model` (a BertModel or classifier, fp32, eval) with its mask-free calls run by a frozen trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self._traced: dict[str, torch.jit.ScriptModule] = {}  # per device; not a submodule (its weights are constants)
        self.mask_free_calls = 0

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        eager = (torch.is_grad_enabled() or torch.is_autocast_enabled(input_ids.device.type)
                 or input_ids.shape[1] > self.cfg.max_position_embeddings
                 or (attention_mask is not None and not bool(attention_mask.all())))
        if not eager:
            self.mask_free_calls += 1
        if eager or self.mask_free_calls <= TRACE_AFTER:
            return self.model(input_ids, attention_mask, token_type_ids)
        ones = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        key = str(input_ids.device)
        if key not in self._traced:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the frozen shape checks: see the docstring
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: see the docstring
                self._traced[key] = torch.jit.freeze(torch.jit.trace(self.model.eval(), (input_ids, ones, token_type_ids)))
        return self._traced[key](input_ids, ones, token_type_ids)

    def _apply(self, fn, recurse=True):
        self._traced.clear()  # moved or cast: trace again on the next call
        return super()._apply(fn, recurse)
