"""The decode loop's tensors: a KV cache with one slot per row, prefill, one step for all rows.

Why a hand-written forward instead of `model.generate` or transformers' own continuous batching:
`generate` fixes its rows at the start of a pass and runs ~1 ms of Python per step per
processor, which for a 135M model on a CPU costs about as much as the matmuls.
`transformers.generation.continuous_batching` (5.x) is built around paged attention kernels and
a scheduler of its own: it offers neither peft's per-row `adapter_names` (each row its own LoRA)
nor per-row sampling and seeds, and its CPU path is the slow eager fallback. A Llama forward
(SmolLM2, Mistral) is thirty lines over the model's own modules (embedding, norms, rotary
embedding, attention projections, MLP, head), so the loop keeps full control at little cost:

- `SlotCache`: per layer one key and one value tensor of shape (slots, kv heads, capacity,
  head dim). Row i of the batch lives in slot i at its own true positions 0..length-1, so a
  newcomer needs no re-alignment (no left padding: its positions and rotary phases are those of
  its solo run) and a row that leaves is replaced by the last row (one row copied, not the whole
  batch). Capacity follows the longest row's prompt + max_new_tokens, in chunks; an empty batch
  frees the cache. Slots are allocated with `torch.empty`, whose pages the OS maps only once
  written, so unused slots cost no memory.
- attention masks only key positions >= the row's length (`scaled_dot_product_attention`).
- prefill runs the newcomers' prompts right-padded (causal attention never looks right, so a row
  never sees padding), computes the head only at each row's last token, and writes their keys and
  values into fresh slots.
- Q, K and V, and gate and up, run as one layer each (`SiblingProjections`, modeling/fused.py),
  and their adapters as one packed group: modeling/multi_lora.py answers all adapters of a batch,
  each row its own, in one product for the group's A's and one per layer for its B. On the AMX
  Xeon this took a step from 17.9 to 14.7 ms for the bare base and from 25.4 to 21.3 ms for one
  row with an adapter (128 fewer operations a step).
"""

from __future__ import annotations

import torch

from modeling.adapters import PEFT_BASE_NAME
from modeling.fused import fused_linear
from modeling.multi_lora import packed_group

CAPACITY_CHUNK = 256  # tokens the cache grows by (re-allocating and copying the used part)


def causal_lm_of(model):
    """The transformers CausalLM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class SlotCache:
    """Keys and values of every row of the batch; slot i is row i."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype, device):
        self.shape = (layers, kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slots = 0
        self.capacity = 0

    def fit(self, live: int, slots: int, capacity: int) -> None:
        """Hold `slots` rows of `capacity` tokens (rounded up to a chunk), keeping the first
        `live` rows' cache. The capacity follows the batch's longest reservation, down as well as
        up, so the memory held is what the scheduler's `max_cached_tokens` accounts for. Slots
        grow to a power of two (few re-allocations as rows join); a slot's pages are mapped only
        once a row uses it."""
        capacity = -(-capacity // CAPACITY_CHUNK) * CAPACITY_CHUNK
        if slots <= self.slots and capacity == self.capacity:
            return
        slots = 1 << (max(slots, live, 1) - 1).bit_length()
        kept = min(capacity, self.capacity)
        layers, kv_heads, head_dim = self.shape
        keys, values = [], []
        for layer in range(layers):
            k = torch.empty(slots, kv_heads, capacity, head_dim, dtype=self.dtype, device=self.device)
            v = torch.empty_like(k)
            if live:
                k[:live, :, :kept] = self.keys[layer][:live, :, :kept]
                v[:live, :, :kept] = self.values[layer][:live, :, :kept]
                # Masked positions are multiplied by zero weights: they must hold numbers, never
                # the NaN bit patterns uninitialised memory may contain.
                k[:live, :, kept:] = 0
                v[:live, :, kept:] = 0
            keys.append(k)
            values.append(v)
        self.keys, self.values = keys, values
        self.slots, self.capacity = slots, capacity

    def clear_slots(self, first: int, count: int) -> None:
        """Zero the slots new rows are about to use (see fit: no garbage under the mask)."""
        for k, v in zip(self.keys, self.values):
            k[first : first + count] = 0
            v[first : first + count] = 0

    def move(self, source: int, target: int, length: int) -> None:
        """Copy a row's cached tokens into another slot (a leaving row's place)."""
        for k, v in zip(self.keys, self.values):
            k[target, :, :length] = k[source, :, :length]
            v[target, :, :length] = v[source, :, :length]

    def free(self) -> None:
        self.keys, self.values = [], []
        self.slots = self.capacity = 0

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def _fused_norm(norm, hidden_size: int):
    """`(module, x) -> module(x)` for the model's RMSNorm layers, as one fused `rms_norm` call
    when that gives bit-for-bit what the module computes (Llama's and Mistral's RMSNorm: about
    eight small operations each, twice per layer), else the module's own forward."""
    import torch.nn.functional as F

    def by_module(module, x):
        return module(x)

    eps = getattr(norm, "variance_epsilon", None)
    weight = getattr(norm, "weight", None)
    if eps is None or weight is None or weight.shape != (hidden_size,):
        return by_module
    probe = torch.randn(2, 3, hidden_size, generator=torch.Generator().manual_seed(0)).to(weight.dtype).to(weight.device)

    def fused(module, x):
        return F.rms_norm(x, (hidden_size,), module.weight, module.variance_epsilon)

    with torch.inference_mode():
        return fused if torch.equal(fused(norm, probe), norm(probe)) else by_module


def _one_pass_rotary(rotate, heads: int, kv_heads: int, head_dim: int, dtype, device):
    """The model's rotary embedding of (q, k) in one pass over both: rotate_half(x) is x times a
    fixed signed permutation, so `x * cos + (x @ P) * sin` over q and k stacked is four
    operations where the model's own function makes about sixteen. Each output element is one
    product and one sum, so it is exact; it is used only when a probe gives bit-for-bit the
    model's own result, else the model's function is."""
    half = head_dim // 2
    permutation = torch.zeros(head_dim, head_dim, dtype=dtype, device=device)
    permutation[half:, :half] = -torch.eye(half, dtype=dtype, device=device)  # out[i] = -x[i + half]
    permutation[:half, half:] = torch.eye(half, dtype=dtype, device=device)  # out[i + half] = x[i]

    def one_pass(q, k, cos, sin):
        both = torch.cat([q, k], dim=1)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        both = both * cos + (both @ permutation) * sin
        return both[:, :heads], both[:, heads:]

    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, n, 3, head_dim, generator=generator).to(dtype).to(device) for n in (heads, kv_heads))
    cos, sin = (torch.randn(2, 3, head_dim, generator=generator).to(dtype).to(device) for _ in range(2))
    with torch.inference_mode():
        mine, theirs = one_pass(q, k, cos, sin), rotate(q, k, cos, sin)
    exact = head_dim % 2 == 0 and all(torch.equal(a, b) for a, b in zip(mine, theirs))
    return one_pass if exact else rotate


def project(module, x, adapter_names):
    """`module(x)`, giving a LoRA layer each row's adapter."""
    if adapter_names is not None and hasattr(module, "lora_A"):
        return module(x, adapter_names=list(adapter_names))
    return module(x)


class SiblingProjections:
    """Linear layers of one decoder layer that read the same input (Q, K, V; gate, up; or one
    alone), computed together where they can be: their base layers as one fused layer
    (modeling/fused.py) and their adapters as one packed group (modeling/multi_lora.py). Where
    either cannot be (bitsandbytes' 4-bit layers, an adapter that is not packed, a row naming an
    adapter these layers lack), each layer runs on its own, as transformers would run it."""

    def __init__(self, modules: list):
        self.modules = modules
        bases = [m.base_layer if hasattr(m, "base_layer") else m for m in modules]
        self.sizes = [b.out_features for b in bases]
        self.fused = fused_linear(bases)
        self.has_lora = any(hasattr(m, "lora_A") for m in modules)
        self.lora = packed_group(modules) if self.fused is not None and self.has_lora else None

    def __call__(self, x, adapters: tuple[str, ...] | None) -> list:
        """Each layer's output for `x`; `adapters`: each row's peft adapter name (None: no adapters)."""
        if self.fused is not None:
            if not self.has_lora:
                mask = None
            elif adapters is None or self.lora is None:
                mask = False  # peft's own forward (its active adapter, or layers not packed together)
            else:
                mask = self.lora.mask(adapters)  # False: a row's adapter is not packed here
            if mask is not False:
                out = self.fused(x)
                if mask is not None:
                    self.lora.add_to(x, out, mask)
                return out.split(self.sizes, dim=-1) if len(self.sizes) > 1 else [out]
        return [project(m, x, adapters) for m in self.modules]


class ModelRunner:
    """Forward passes of a Llama-family causal LM (Llama, SmolLM2, Mistral) over a SlotCache."""

    def __init__(self, model):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.causal_lm = causal_lm_of(model)
        config = self.causal_lm.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        self.vocab_size = config.vocab_size
        self.max_positions = getattr(config, "max_position_embeddings", None)
        inner = self.causal_lm.model
        self.dtype = inner.embed_tokens.weight.dtype
        self.device = inner.embed_tokens.weight.device
        self.rotary = _one_pass_rotary(apply_rotary_pos_emb, self.heads, self.kv_heads, self.head_dim, self.dtype, self.device)
        self.rms_norm = _fused_norm(inner.norm, config.hidden_size)
        self.projections = [
            (SiblingProjections([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
             SiblingProjections([layer.self_attn.o_proj]),
             SiblingProjections([layer.mlp.gate_proj, layer.mlp.up_proj]),
             SiblingProjections([layer.mlp.down_proj]))
            for layer in inner.layers
        ]

    def new_cache(self) -> SlotCache:
        layers = len(self.causal_lm.model.layers)
        return SlotCache(layers, self.kv_heads, self.head_dim, self.dtype, self.device)

    # ----------------------------------------------------------------------------- layers
    def _layers(self, hidden, positions, adapter_names, attend):
        """Run every decoder layer; `attend(layer index, q, k, v)` returns the attention output."""
        inner = self.causal_lm.model
        cos, sin = inner.rotary_emb(hidden, positions)
        rows, tokens, _ = hidden.shape
        adapters = None if adapter_names is None else tuple(adapter_names)
        for index, layer in enumerate(inner.layers):
            qkv, o, gate_up, down = self.projections[index]
            x = self.rms_norm(layer.input_layernorm, hidden)
            q, k, v = qkv(x, adapters)
            q = q.view(rows, tokens, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(rows, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(rows, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rotary(q, k, cos, sin)
            out = attend(index, q, k, v).transpose(1, 2).reshape(rows, tokens, self.heads * self.head_dim)
            hidden = hidden + o(out, adapters)[0]
            x = self.rms_norm(layer.post_attention_layernorm, hidden)
            gate, up = gate_up(x, adapters)
            hidden = hidden + down(layer.mlp.act_fn(gate) * up, adapters)[0]
        return self.rms_norm(inner.norm, hidden)

    def _head(self, hidden, adapter_names):
        return project(self.causal_lm.lm_head, hidden, adapter_names)

    # ----------------------------------------------------------------------------- passes
    def prefill(self, cache: SlotCache, first_slot: int, prompts: list[list[int]], adapter_names):
        """Run `prompts` (one new row each, slots first_slot...) and cache their keys and values;
        returns the logits after each prompt's last token, (rows, vocab)."""
        rows, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.zeros(rows, width, dtype=torch.long, device=self.device)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        positions = torch.arange(width, device=self.device).expand(rows, width)
        hidden = self.causal_lm.model.embed_tokens(ids)
        slots = slice(first_slot, first_slot + rows)

        def attend(layer, q, k, v):
            cache.keys[layer][slots, :, :width] = k
            cache.values[layer][slots, :, :width] = v
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.scaling, enable_gqa=self.kv_heads != self.heads
            )

        hidden = self._layers(hidden, positions, adapter_names, attend)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        hidden = hidden[torch.arange(rows, device=self.device), last].unsqueeze(1)  # (rows, 1, hidden)
        return self._head(hidden, adapter_names)[:, 0]

    def decode(self, cache: SlotCache, tokens, lengths, adapter_names):
        """One step for rows 0..n-1: `tokens` (n,) go in at positions `lengths` (n,), which are
        also how many tokens each row has cached; returns (n, vocab) logits."""
        rows = tokens.shape[0]
        span = int(lengths.max()) + 1
        positions = lengths.view(rows, 1)
        row_index = torch.arange(rows, device=self.device)
        # (rows, 1, 1, span): a row attends to its own cached tokens and the new one.
        mask = (torch.arange(span, device=self.device).view(1, span) <= positions).view(rows, 1, 1, span)
        hidden = self.causal_lm.model.embed_tokens(tokens.view(rows, 1))

        def attend(layer, q, k, v):
            keys, values = cache.keys[layer], cache.values[layer]
            keys[row_index, :, lengths] = k[:, :, 0]
            values[row_index, :, lengths] = v[:, :, 0]
            return torch.nn.functional.scaled_dot_product_attention(
                q, keys[:rows, :, :span], values[:rows, :, :span], attn_mask=mask, scale=self.scaling,
                enable_gqa=self.kv_heads != self.heads,
            )

        hidden = self._layers(hidden, positions, adapter_names, attend)
        return self._head(hidden, adapter_names)[:, 0]


def peft_adapter_names(adapters: list[str], base_name: str, has_adapters: bool):
    """Our adapter names per row -> peft's (`base_name` rows use no adapter); None without any."""
    if not has_adapters:
        return None
    return [PEFT_BASE_NAME if a == base_name else a for a in adapters]


class RowSink:
    """Where a row's tokens go (the engine streams them as text); see chatbot/scheduler.py."""

    def token(self, token_id: int) -> None: ...

    def end(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...


class Row:
    """One answer being generated: its prompt, adapter, sampling options and progress."""

    __slots__ = ("prompt", "adapter", "options", "seed", "sink", "length", "generated", "token", "reserved")

    def __init__(self, prompt: list[int], adapter: str, options, seed, sink: RowSink):
        self.prompt, self.adapter, self.options, self.seed, self.sink = prompt, adapter, options, seed, sink
        self.length = 0  # tokens in the cache
        self.generated = 0  # answer tokens produced
        self.token = None  # the last token produced, the input of the next step
        self.reserved = len(prompt) + options.max_new_tokens  # cache tokens it may need


class DecodeBatch:
    """The rows being decoded together: join (prefill), step, leave. Not thread-safe: one
    worker owns it (chatbot/scheduler.py)."""

    def __init__(self, model, eos_token_ids: set[int], base_adapter: str):
        from chatbot.sampling import RowSampler

        self.eos = set(eos_token_ids)
        self.base_adapter = base_adapter
        self.set_model(model)
        self.rows: list[Row] = []
        self.cache = self.runner.new_cache()
        self.sampler = RowSampler(self.runner.vocab_size, self.runner.device)

    def set_model(self, model) -> None:
        """After an adapter is attached (peft may have wrapped the model): cached rows stay valid,
        the base weights do not change."""
        self.runner = ModelRunner(model)
        self._has_adapters = hasattr(model, "peft_config")

    def __len__(self) -> int:
        return len(self.rows)

    def _adapter_names(self, rows: list[Row]):
        return peft_adapter_names([r.adapter for r in rows], self.base_adapter, self._has_adapters)

    @property
    def reserved_tokens(self) -> int:
        """Cache tokens the rows may need: rows x the longest reservation (slots are padded)."""
        return len(self.rows) * max((r.reserved for r in self.rows), default=0)

    def join(self, rows: list[Row]) -> None:
        """Prefill `rows` in one pass and add them; each gets its first token (streamed)."""
        first = len(self.rows)
        self.cache.fit(first, first + len(rows), max(r.reserved for r in self.rows + rows))
        self.cache.clear_slots(first, len(rows))
        for row in rows:  # first: it refuses options it cannot sample with, before any work
            self.sampler.add(row.options, row.seed)
        logits = self.runner.prefill(self.cache, first, [r.prompt for r in rows], self._adapter_names(rows))
        for row in rows:
            row.length = len(row.prompt)
        self.rows.extend(rows)
        tokens = self.sampler.next_tokens(logits, range(first, first + len(rows)))
        self._advance(rows, tokens)

    def step(self) -> None:
        """One token for every row, in one forward pass."""
        rows = self.rows
        tokens = torch.tensor([r.token for r in rows], dtype=torch.long, device=self.runner.device)
        lengths = torch.tensor([r.length for r in rows], dtype=torch.long, device=self.runner.device)
        logits = self.runner.decode(self.cache, tokens, lengths, self._adapter_names(rows))
        for row in rows:
            row.length += 1
        self._advance(rows, self.sampler.next_tokens(logits))

    def _advance(self, rows: list[Row], tokens) -> None:
        for row, token in zip(rows, tokens):
            token = int(token)
            row.token = token
            if token in self.eos:
                row.generated = row.options.max_new_tokens  # finished: the end token is not text
                continue
            row.generated += 1
            row.sink.token(token)

    def finished(self) -> list[int]:
        """Rows that are done: an end token, their max_new_tokens, or their caller gone."""
        return [i for i, r in enumerate(self.rows) if r.generated >= r.options.max_new_tokens or r.sink.cancelled]

    def leave(self, indices: list[int]) -> None:
        """Remove rows at once (ending their streams); the last rows move into the free slots."""
        if not indices:
            return
        gone = set(indices)
        ended = [self.rows[i].sink for i in sorted(gone)]
        keep = [i for i in range(len(self.rows)) if i not in gone]
        if not keep:
            self.clear()
        else:
            self._compact(gone, keep)
        for sink in ended:  # after the batch is updated: a caller told "done" sees its row gone
            sink.end()

    def _compact(self, gone: set[int], keep: list[int]) -> None:
        # Fill each hole below len(keep) with a surviving row from above it.
        holes = [i for i in sorted(gone) if i < len(keep)]
        movers = [i for i in keep if i >= len(keep)]
        order = list(range(len(self.rows)))
        for hole, mover in zip(holes, movers):
            self.cache.move(mover, hole, self.rows[mover].length)
            order[hole] = mover
        order = order[: len(keep)]
        self.rows = [self.rows[i] for i in order]
        self.sampler.keep(order)

    def clear(self) -> None:
        """Drop every row and free the cache's memory."""
        self.rows = []
        self.sampler.keep([])
        self.cache.free()
