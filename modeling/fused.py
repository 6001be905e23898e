"""Sibling projections that read the same input as one layer: Q, K and V; gate and up.

A decode step on a CPU is bound by the number of operations more than by arithmetic (a 135M
model: 211 linear layers a token). Q, K and V read the same normed hidden state, and so do the
MLP's gate and up; one matmul over their weights stacked along the output gives the same numbers
(each output column is its own dot product) in one kernel call instead of three or two. Measured
on the AMX Xeon, SmolLM2's Q+K+V in 4 bits: 29.7 us as three calls, 18.0 us as one.

The fused layer owns the stacked weights and the members' weights become views into them, so
fusing costs no memory and the members (which transformers' own forward, scoring and training
still call) compute what they did. What may be stacked: plain `nn.Linear` without bias, and the
CPU formats of this package (modeling/int8.py, modeling/int4.py). Anything else (bitsandbytes'
4-bit layers, a bias, mixed formats) is left alone: `fused_linear` returns None and the caller
runs the members one by one. A fused layer is used only when a probe gives bit-for-bit the
members' outputs side by side.

Written here because neither transformers nor peft fuses projections for inference on a CPU
(vLLM does it in its own model definitions: QKVParallelLinear, MergedColumnParallelLinear).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from modeling.int4 import Int4Linear
from modeling.int8 import Int8Linear

# Fused layers by their first member: built once per loaded model (the members' weights become
# views then), found again when a decode loop is rebuilt after an adapter is attached.
_FUSED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], nn.Module | None]]" = weakref.WeakKeyDictionary()


def _stack(members: list[nn.Module], fused: nn.Module, tensors: list[str], dims: dict[str, int]) -> None:
    """Give `fused` each named tensor stacked over `members`, and point the members at views."""
    for name in tensors:
        dim = dims.get(name, 0)
        parts = [getattr(m, name) for m in members]
        stacked = torch.cat([p.detach() for p in parts], dim=dim)
        if isinstance(parts[0], nn.Parameter):
            setattr(fused, name, nn.Parameter(stacked, requires_grad=False))
        else:
            fused.register_buffer(name, stacked)
        start = 0
        for member, part in zip(members, parts):
            size = part.shape[dim]
            view = stacked.narrow(dim, start, size)
            if isinstance(part, nn.Parameter):
                part.data = view
            else:
                setattr(member, name, view)
            start += size


def _build(members: list[nn.Module]) -> nn.Module | None:
    kind = type(members[0])
    if any(type(m) is not kind or m.bias is not None or m.in_features != members[0].in_features for m in members):
        return None
    fused = kind.__new__(kind)
    nn.Module.__init__(fused)
    fused.in_features = members[0].in_features
    fused.out_features = sum(m.out_features for m in members)
    fused.bias = None
    if kind is nn.Linear:
        _stack(members, fused, ["weight"], {})
    elif kind is Int8Linear:
        _stack(members, fused, ["weight", "scales", "scales_bf16"], {})
    elif kind is Int4Linear:
        # The packed codes are blocked along the output rows (modeling/int4.py), so stacking the
        # members' packed tensors is packing the stacked codes; the scales are (groups, out, 2).
        _stack(members, fused, ["weight", "scales_and_zeros"], {"scales_and_zeros": 1})
    else:
        return None
    return fused


def _exact(fused: nn.Module, members: list[nn.Module]) -> bool:
    weight = members[0].weight
    probe = torch.randn(3, 1, members[0].in_features, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device=weight.device, dtype=torch.float32 if not weight.is_floating_point() else weight.dtype)
    with torch.inference_mode():
        return torch.equal(fused(probe), torch.cat([m(probe) for m in members], dim=-1))


def fused_linear(members: list[nn.Module]) -> nn.Module | None:
    """One layer computing `members` side by side (outputs concatenated in their order), or None
    when they cannot be stacked. Built once: later calls with the same members return it."""
    key = tuple(id(m) for m in members)
    known = _FUSED.get(members[0])
    if known is not None and known[0] == key:
        return known[1]
    fused = _build(members)
    if fused is not None and not _exact(fused, members):
        fused = None
    _FUSED[members[0]] = (key, fused)
    return fused
