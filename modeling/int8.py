"""Weight-only int8 linear layers: the fast way to serve a small model on a CPU.

Decoding one token reads every weight once, so on a CPU its speed is set by how many bytes the
weights take. bitsandbytes' 4-bit layers are small but, on a CPU, de-quantize every weight on
every call in a slow kernel; bf16 weights halve fp32's bytes, but CPUs without bf16 units pay
for conversions. Here each weight row is stored as int8 with one scale (absmax / 127): a
quarter of fp32's bytes, read by PyTorch's own int8 x bf16 kernel (`_weight_int8pack_mm`, the
one gpt-fast uses on CPU) while decoding. Prompts (many rows at once) are compute-bound
instead, so there the weights are de-quantized once per call and multiplied in the model's
dtype by the BLAS.

`Int8Linear` subclasses `nn.Linear`, so peft wraps it like any linear layer: LoRA adapters,
per-row `adapter_names` and the engine's batching work unchanged on top of it.
"""

from __future__ import annotations

import torch
from torch import nn

# At most this many rows (batch x new tokens) go through the int8 kernel: decoding steps of
# micro-batched requests do; a prompt's prefill does not.
DECODE_ROWS = 16


class Int8Linear(nn.Linear):
    """A linear layer whose weight is int8 with one float scale per output row."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)  # skip nn.Linear's allocation of a float weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.weight = nn.Parameter(quantized, requires_grad=False)
        self.register_buffer("scales", scales)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.scales[:, None].to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and flat.shape[0] <= DECODE_ROWS:
            out = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scales_bf16).to(x.dtype)
        else:
            out = nn.functional.linear(flat, self.dequantized(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_linear_layers(model: nn.Module, layer_for=None) -> int:
    """Replace every nn.Linear of `model` (the output head too) by `layer_for(linear, is_head)`,
    by default an Int8Linear (modeling/int4.py passes its own); returns how many.

    A head tied to the input embedding gets its own quantized copy: the embedding is only indexed
    (a few rows per token), while the head reads all of it at every step.
    """
    head = model.get_output_embeddings()
    if getattr(model.config, "tie_word_embeddings", False):
        model.config.tie_word_embeddings = False
    layer_for = layer_for or (lambda linear, is_head: Int8Linear(linear))
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, layer_for(child, child is head))
                replaced += 1
    return replaced
