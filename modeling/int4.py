"""Weight-only 4-bit linear layers in GGUF Q4_1's own form: half of int8's bytes per token.

Decoding one token on a CPU reads every weight once, so its speed is set by the bytes the
weights take (modeling/int8.py). Q4_1, the format the embedded SmolLM2 GGUF ships its decoder
layers in, stores blocks of 32 input weights as 4-bit codes with one scale and one minimum:
w = code * scale + min. PyTorch's CPU kernel for gpt-fast's int4 format
(`_weight_int4pack_mm_for_cpu`) computes exactly that form: groups of 32 along the input,
w = (code - 8) * scale + zero, i.e. zero = min + 8 * scale. So re-quantizing the de-quantized
GGUF weights gives back the GGUF's own codes (the blocks' minimum and maximum are codes 0 and 15;
measured: the largest difference to the checkpoint's weights is 0.0 before the scales are
rounded to the kernel's bf16). The output head stays int8 (modeling/int8.py): the GGUF stores
it with 8 bits (Q8_0), and 4 bits there would change the model.

While decoding (few rows) the kernel reads the packed codes with bf16 activations; a prompt's
prefill (many rows, compute-bound) de-quantizes the layer's weights once per call, from the same
codes and the same bf16 scales, and multiplies in the model's dtype with the BLAS. The packed
tensor is the kernel's own blocked layout, whose block follows the CPU's vector width (found by
a probe at first use); `codes` unpacks it for the prefill, and every layer checks at load that
unpacking gives back its codes, so a torch whose layout differs falls back to int8 for that
layer instead of computing with scrambled weights.

Written here because no library offers it on a CPU without a new dependency: torchao's int4
CPU layout needs its own build, and bitsandbytes' 4-bit CPU kernels de-quantize every weight on
every call.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from modeling.int8 import Int8Linear, quantize_linear_layers

GROUP = 32  # input weights per scale: Q4_1's block
_PROBE_ROWS = 128  # a multiple of every block size below, to find the kernel's block
# Up to this many rows (batch x new tokens) go through the 4-bit kernel: decode steps and short
# prompts. Beyond it the kernel's arithmetic costs more than de-quantizing the layer once and
# multiplying with the BLAS (measured on the AMX Xeon, one 1536 x 576 layer: 2.1 against 7.2 ms at
# 128 rows, 8.9 against 9.0 ms at 512).
KERNEL_ROWS = 256


@functools.cache
def block_rows() -> int | None:
    """Output rows per block of the kernel's packed layout on this CPU (its vector width: 64 with
    AVX-512, 32 with AVX2), found by packing known codes; None if no layout this module knows."""
    codes = torch.randint(0, 16, (_PROBE_ROWS, GROUP * 2), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    try:
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    except (RuntimeError, AttributeError):
        return None
    return next((rows for rows in (64, 32, 16) if torch.equal(_unpack(packed, *codes.shape, rows).to(torch.int32), codes)), None)


def _packable(linear: nn.Linear) -> bool:
    rows = block_rows()
    return rows is not None and linear.bias is None and linear.in_features % GROUP == 0 and linear.out_features % rows == 0


def _unpack(packed: torch.Tensor, out_features: int, in_features: int, rows: int) -> torch.Tensor:
    """The kernel's layout -> codes (out, in): per block of `rows` output rows, byte [k, j] holds
    row j (low nibble) and row j + rows / 2 (high nibble) of input k."""
    blocks = packed.view(out_features // rows, in_features, rows // 2)
    codes = torch.cat([blocks & 15, blocks >> 4], dim=2)  # (blocks, in, rows)
    return codes.permute(0, 2, 1).reshape(out_features, in_features)


class Int4Linear(nn.Linear):
    """A linear layer whose weight is 4-bit codes with a bf16 scale and zero per 32 inputs."""

    def __init__(self, linear: nn.Linear, codes: torch.Tensor, scales_and_zeros: torch.Tensor):
        nn.Module.__init__(self)  # skip nn.Linear's allocation of a float weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # `weight`, as peft looks for it to place adapters; the kernel's packed uint8 codes.
        self.weight = nn.Parameter(torch._convert_weight_to_int4pack_for_cpu(codes, 1), requires_grad=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # (in / GROUP, out, 2), bf16
        self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int4Linear | None":
        """The 4-bit layer for `linear`, or None when its shape does not fit the kernel's layout
        or this torch packs the codes in another layout."""
        if not _packable(linear):
            return None
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        groups = weight.view(out_features, in_features // GROUP, GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scales = ((high - low) / 15).clamp(min=1e-8)
        codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32)
        codes = codes.view(out_features, in_features)
        zeros = low + 8 * scales
        scales_and_zeros = torch.stack([scales.t(), zeros.t()], dim=-1).contiguous().to(torch.bfloat16)
        layer = cls(linear, codes, scales_and_zeros)
        if not torch.equal(layer.codes(), codes):
            return None
        return layer

    def codes(self) -> torch.Tensor:
        return _unpack(self.weight, self.out_features, self.in_features, block_rows()).to(torch.int32)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """(out, in) weights in `dtype`, from the packed codes in one pass per nibble: a prompt's
        prefill calls this for every layer, so no full-size temporary is made on the way."""
        rows = block_rows()
        blocks, groups = self.out_features // rows, self.in_features // GROUP
        scales, zeros = self.scales_and_zeros.to(dtype).unbind(-1)  # (in / GROUP, out) each
        lows = zeros - 8 * scales  # each block's minimum: w = code * scale + min
        # Viewed as [block, nibble (rows j / j + rows / 2), j, group, input in group]:
        scales = scales.t().reshape(blocks, 2, rows // 2, groups, 1)
        lows = lows.t().reshape(blocks, 2, rows // 2, groups, 1)
        packed = self.weight.view(blocks, groups, GROUP, rows // 2)  # [block, group, k, j]
        weight = torch.empty(blocks, 2, rows // 2, groups, GROUP, dtype=dtype, device=self.weight.device)
        for nibble, codes in enumerate((packed & 15, packed >> 4)):
            torch.addcmul(lows[:, nibble], codes.permute(0, 3, 1, 2), scales[:, nibble], out=weight[:, nibble])
        return weight.view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and flat.shape[0] <= KERNEL_ROWS:
            # contiguous(): a member of a fused layer (modeling/fused.py) holds a strided view of
            # the stacked scales, which the kernel would misread; a few KB copied per call.
            out = torch._weight_int4pack_mm_for_cpu(flat.to(torch.bfloat16), self.weight, GROUP,
                                                    self.scales_and_zeros.contiguous()).to(x.dtype)
        else:
            out = nn.functional.linear(flat, self.dequantized(x.dtype))
        return out.reshape(*x.shape[:-1], self.out_features)


def _int4_layer(linear: nn.Linear, is_head: bool) -> nn.Linear:
    """The head stays int8 (Q8_0 in the GGUF), and so does a layer the 4-bit layout does not fit."""
    return (None if is_head else Int4Linear.from_linear(linear)) or Int8Linear(linear)


def quantize_linear_layers_int4(model: nn.Module) -> int:
    """Every nn.Linear of `model`'s decoder layers to Int4Linear, the output head to int8
    (modeling/int8.py, which also unties a head tied to the embedding); returns how many."""
    return quantize_linear_layers(model, _int4_layer)
