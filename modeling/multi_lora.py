"""Every adapter in two matrix products per layer: fast per-row LoRA for batches of mixed adapters.

peft applies per-row adapters (`adapter_names`) one adapter at a time: for each layer and each
adapter in the batch it selects that adapter's rows, runs lora_A and lora_B, scales and writes
the rows back, about eight small operations. A 135M model has 211 LoRA layers, so on a CPU those
operations cost more than the base model's own matmuls (measured: +35 ms per token per adapter
against 65 ms for the base), and an arena battle (two adapters) paid that twice.

Here each LoRA layer keeps its adapters packed side by side: A = [A_1; ...; A_n] (n*r x in) and
B = [B_1, ..., B_n] (out x n*r). A batch then costs `((x @ A^T) * row_scales) @ B^T` whatever
adapters its rows use: per row, the scales are the adapter's LoRA scaling on its own columns and
zero elsewhere (all zero for the bare base). The extra arithmetic (all n adapters for every row)
is tiny next to the base layer; what matters on a CPU is the number of operations. peft's own
weights become views into the packed tensors, so packing costs no memory.

The packed forward is exact LoRA (the same sums, in another order), used only for plain LoRA
layers in eval mode; anything else (DoRA and other variants, merged or disabled adapters,
training) goes through peft's own forward.
"""

from __future__ import annotations

import torch

from modeling.adapters import PEFT_BASE_NAME as BASE_ROW  # peft's name for rows without an adapter



class PackedLora:
    """The packed weights of one LoRA layer and the row masks for the adapter lists seen so far."""

    def __init__(self, layer, names: list[str]):
        self.names = names
        self.columns, self.scaling = {}, {}
        start = 0
        for name in names:
            rank = layer.lora_A[name].weight.shape[0]
            self.columns[name] = (start, start + rank)
            self.scaling[name] = float(layer.scaling[name])
            start += rank
        dtype = layer.lora_A[names[0]].weight.dtype
        self.a = torch.cat([layer.lora_A[n].weight.detach().to(dtype) for n in names])  # (n*r, in)
        self.b = torch.cat([layer.lora_B[n].weight.detach().to(dtype) for n in names], dim=1)  # (out, n*r)
        for name, (start, end) in self.columns.items():  # peft's weights now live in the packed ones
            layer.lora_A[name].weight.data = self.a[start:end]
            layer.lora_B[name].weight.data = self.b[:, start:end]
        self._masks: dict[tuple[str, ...], torch.Tensor | None] = {}

    def clear_masks(self) -> None:
        """Forget the cached row masks (shared by layers of one layout): the next mix builds anew."""
        self._masks.clear()

    def mask(self, adapter_names: list[str]) -> torch.Tensor | None | bool:
        """(rows, 1, n*r): each row's adapter scaling on its columns; None when every row is the
        base; False when a row names an adapter that is not packed here."""
        key = tuple(adapter_names)
        if key in self._masks:
            return self._masks[key]
        if any(name != BASE_ROW and name not in self.columns for name in key):
            mask = False
        elif all(name == BASE_ROW for name in key):
            mask = None
        else:
            mask = torch.zeros(len(key), 1, self.a.shape[0], dtype=self.a.dtype, device=self.a.device)
            for row, name in enumerate(key):
                if name != BASE_ROW:
                    start, end = self.columns[name]
                    mask[row, 0, start:end] = self.scaling[name]
        if len(self._masks) > 256:  # adapter mixes are few; never let the cache grow unbounded
            self._masks.clear()
        self._masks[key] = mask
        return mask

    def __call__(self, x: torch.Tensor, result: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return result
        rows = x.shape[0]
        # bmm, not matmul: each row is its own product, computed exactly as when it runs alone
        # (a batched matmul may pick another kernel and sum in another order), so a row's greedy
        # answer does not depend on who shares its pass.
        hidden = torch.bmm(x.to(self.a.dtype), self.a.t().expand(rows, -1, -1))  # (rows, tokens, n*r)
        hidden = hidden * mask
        return result + torch.bmm(hidden, self.b.t().expand(rows, -1, -1)).to(result.dtype)


def _packable(layer, names: list[str]) -> bool:
    return (
        not getattr(layer, "fan_in_fan_out", False)
        and all(name in layer.lora_A for name in names)
        and not getattr(layer, "lora_variant", {})  # DoRA, aLoRA...: peft's own forward
        and not getattr(layer, "lora_bias", {}).get(names[0], False)
    )


def _packed_forward(layer):
    peft_forward = layer.forward  # the bound method of the class

    def forward(x, *args, **kwargs):
        adapter_names = kwargs.get("adapter_names")
        packed = getattr(layer, "_wayfarer_packed", None)
        if adapter_names is None or packed is None or x.dim() != 3 or layer.training or layer.disable_adapters or layer.merged:
            return peft_forward(x, *args, **kwargs)
        mask = packed.mask(adapter_names)
        if mask is False:
            return peft_forward(x, *args, **kwargs)
        kwargs.pop("adapter_names")
        return packed(x, layer.base_layer(x, *args, **kwargs), mask)

    return forward


def pack_adapters(model, names: list[str]) -> int:
    """(Re)pack `names` in every plain LoRA layer of `model`; call after each adapter is attached.
    Returns how many layers are packed. No names: every layer back to peft's own forward."""
    from peft.tuners.lora import LoraLayer

    packed = 0
    shared_masks: dict[tuple, dict] = {}  # layers with the same columns and scalings share their masks
    for module in model.modules():
        if not isinstance(module, LoraLayer) or not hasattr(module, "base_layer"):
            continue
        if not isinstance(module.lora_A, torch.nn.ModuleDict) or not names or not _packable(module, names):
            module._wayfarer_packed = None
            continue
        if "forward" not in module.__dict__:
            module.forward = _packed_forward(module)
        pack = PackedLora(module, names)
        layout = (tuple(pack.columns.items()), tuple(pack.scaling.items()), pack.a.dtype, pack.a.device)
        pack._masks = shared_masks.setdefault(layout, pack._masks)
        module._wayfarer_packed = pack
        packed += 1
    return packed


def packed_layers(model) -> list[PackedLora]:
    """The packs of `model`'s packed layers (what the memory benchmark measures)."""
    return [m._wayfarer_packed for m in model.modules() if isinstance(getattr(m, "_wayfarer_packed", None), PackedLora)]
