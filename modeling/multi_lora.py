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
        self.group: PackedLoraGroup | None = None  # set by packed_group when this layer leads one

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


class PackedLoraGroup:
    """The packs of sibling LoRA layers that read one input (Q, K and V; gate and up), for a
    decode loop that runs their base layers as one (modeling/fused.py): their A's stacked, so all
    of them cost one product, then each layer's B added into its columns of the fused output.
    The packs' A's (and peft's weights) become views of the stacked one: no memory is added.

    Rows meet in one matrix product here (not bmm per row as in PackedLora): the decode loop's
    base layers already do, a row's numbers never depend on the other rows' values, and a batch
    of a few rows costs one small product instead of one per row (measured on the AMX Xeon, one
    576-wide layer, 8 rows: 12.9 us against 37.4)."""

    def __init__(self, layers, packs: list[PackedLora], offsets: list[int]):
        """`packs`: those of the group's LoRA layers, `layers`; `offsets`: where each one's
        output starts in the fused output (a sibling without LoRA adds nothing to its columns)."""
        self.a = torch.cat([p.a for p in packs]) if len(packs) > 1 else packs[0].a  # (k*n*r, in)
        width = packs[0].a.shape[0]
        if len(packs) > 1:
            for index, (layer, pack) in enumerate(zip(layers, packs)):
                pack.a = self.a[index * width : (index + 1) * width]
                for name, (start, end) in pack.columns.items():
                    layer.lora_A[name].weight.data = pack.a[start:end]
        self.b_t = [p.b.t() for p in packs]  # (n*r, out) each
        self.offsets = offsets
        self.width = width
        self.lead = packs[0]
        self.members = tuple(id(p) for p in packs)
        self._masks: dict[tuple[str, ...], torch.Tensor | None | bool] = {}

    def mask(self, adapter_names: tuple[str, ...]) -> torch.Tensor | None | bool:
        """(rows, 1, k*n*r): PackedLora.mask for every member side by side."""
        if adapter_names in self._masks:
            return self._masks[adapter_names]
        mask = self.lead.mask(list(adapter_names))
        if isinstance(mask, torch.Tensor) and len(self.b_t) > 1:
            mask = mask.repeat(1, 1, len(self.b_t))
        if len(self._masks) > 256:
            self._masks.clear()
        self._masks[adapter_names] = mask
        return mask

    def add_to(self, x: torch.Tensor, out: torch.Tensor, mask: torch.Tensor) -> None:
        """out (rows, tokens, sum of the members' outputs), contiguous, += every member's LoRA."""
        rows, tokens = x.shape[0], x.shape[1]
        hidden = torch.mm(x.reshape(rows * tokens, -1).to(self.a.dtype), self.a.t())
        hidden = hidden.view(rows, tokens, -1).mul_(mask).view(rows * tokens, -1)
        flat = out.view(rows * tokens, -1)
        for index, (start, b_t) in enumerate(zip(self.offsets, self.b_t)):
            columns = flat[:, start : start + b_t.shape[1]]
            part = hidden[:, index * self.width : (index + 1) * self.width]
            if out.dtype == b_t.dtype:
                columns.addmm_(part, b_t)
            else:
                columns.add_(torch.mm(part, b_t).to(out.dtype))


def packed_group(layers) -> PackedLoraGroup | None:
    """The group of sibling layers `layers` (in the order their outputs are fused), or None when
    none has LoRA, one with LoRA is not packed, or their packs differ in adapters, ranks,
    scalings or dtype. Built once per packing: later calls with the same packs return it."""
    offsets, start, lora_layers = [], 0, []
    for layer in layers:
        if hasattr(layer, "lora_A"):
            lora_layers.append(layer)
            offsets.append(start)
        start += (layer.base_layer if hasattr(layer, "base_layer") else layer).out_features
    packs = [getattr(layer, "_wayfarer_packed", None) for layer in lora_layers]
    if not packs or not all(isinstance(p, PackedLora) for p in packs):
        return None
    lead = packs[0]
    if any(p.columns != lead.columns or p.scaling != lead.scaling or p.a.dtype != lead.a.dtype for p in packs):
        return None
    if any(layer.merged or layer.disable_adapters for layer in lora_layers):
        return None
    key = tuple(id(p) for p in packs)
    group = getattr(lead, "group", None)
    if group is None or group.members != key:
        group = PackedLoraGroup(lora_layers, packs, offsets)
        lead.group = group
    return group


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
