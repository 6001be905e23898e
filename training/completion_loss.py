"""The SFT loss on a CPU: the output head scores the answer tokens only.

trl's SFTTrainer computes its loss with a fused, chunked LM head (`trl.kernels.chunked_logprob`).
On a GPU that is a Triton kernel over the positions that carry a label; on a CPU it falls back
to scoring every position, prompt included, with fp32 matmuls over the whole vocabulary, and its
backward pass computes those products again. A RAFT row is ~85% prompt (the documents), and
SmolLM2's head is a 49,152 x 576 matmul per token: py-spy on the pipeline's RAFT step put a
fifth of the step in that kernel on a 2-vCPU Xeon with AMX.

Here the backbone runs as usual (LoRA layers, bf16 autocast) and the head runs only on the
hidden states whose next token is a label (the answer: trl's collator marks the prompt -100),
in the head's own dtype with autocast off (fp32 on the CPU's float32 base, as trl's kernel
computes it), then cross-entropy. The loss is the same sum over answer tokens divided by
`num_items_in_batch` (or by this batch's answer tokens), so eval losses stay comparable with
trl's. Written here because trl has no option for it; used only on a CPU (training/sft.py).

DPO (and KTO) call the same fused head through the model: `model(..., labels=, fused_lm_head=True)`
returns per-token log-probabilities, and on a CPU trl computes them (and the entropy and
top-1 metrics) at every position of both answers, prompt and documents included, for the
policy and again for the reference. `score_label_positions_only` makes that call score the
labelled positions only, with the same outputs (zero elsewhere, as trl's), in the head's
autocast dtype as trl's kernel runs it there.
"""

from __future__ import annotations

IGNORE_INDEX = -100  # transformers' label for positions without a loss


def _labelled_hidden_states(causal_lm, labels, *args, **kwargs):
    """The backbone's hidden states at the positions whose next token is a label, those labels,
    and where they are (a (batch, seq_len - 1) mask): what both losses below put the head on."""
    kwargs["use_cache"] = False
    hidden = causal_lm.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # the stack under the head
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return hidden[mask], targets[mask], mask


def completion_nll(model, inputs, num_items_in_batch=None):
    """The batch's loss: the negative log-likelihood of its labelled tokens, summed, divided by
    `num_items_in_batch` (or by this batch's labelled tokens)."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden, targets, mask = _labelled_hidden_states(causal_lm, inputs["labels"], input_ids=inputs["input_ids"],
                                                   attention_mask=inputs.get("attention_mask"))
    head = causal_lm.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):
        logits = head(hidden.to(head.weight.dtype)).float()
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return nll / torch.as_tensor(count, device=nll.device).clamp(min=1)


def completion_loss_trainer(sft_trainer_class):
    """A subclass of trl's SFTTrainer whose loss is `completion_nll` (trl is imported lazily)."""

    class CompletionLossSFTTrainer(sft_trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # accelerate applies bf16 autocast by wrapping model.forward, which this bypasses.
            with self.accelerator.autocast():
                loss = completion_nll(model, inputs, num_items_in_batch)
            # As trl and transformers do: num_items_in_batch counts every rank's tokens, DDP averages.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            if return_outputs:
                from transformers.modeling_outputs import CausalLMOutput

                return loss, CausalLMOutput(loss=loss)
            return loss

    return CompletionLossSFTTrainer


def score_label_positions_only(causal_lm) -> None:
    """Replace trl's fused-head forward on `causal_lm` (patched by trl's DPO/KTO trainers) with
    one that scores only the positions whose next token is a label. Calls without
    `fused_lm_head`, with pre-shifted labels or with MoE router logits go to trl's own."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = causal_lm.forward
    routed = bool(getattr(causal_lm.config.get_text_config(), "output_router_logits", False))

    def forward(*args, fused_lm_head=False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or routed or kwargs.get("shift_labels") is not None or labels is None:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        hidden, targets, mask = _labelled_hidden_states(causal_lm, labels, *args, **kwargs)
        logits = causal_lm.get_output_embeddings()(hidden).float()  # under autocast, as trl's kernel
        log_probs = logits.log_softmax(-1)
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            mean_logits = logits.mean(-1)
            is_top1 = logits.argmax(-1) == targets

        def per_token(values):  # (labelled positions,) -> (batch, seq_len - 1), zero elsewhere
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        token_log_probs = per_token(picked)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-token_log_probs.sum() / count, log_probs=token_log_probs,
                                   entropy=per_token(entropy), mean_logits=per_token(mean_logits),
                                   is_top1=per_token(is_top1), label_mask=mask)

    causal_lm.forward = forward
