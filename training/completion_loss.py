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
"""

from __future__ import annotations

IGNORE_INDEX = -100  # transformers' label for positions without a loss


def completion_nll(model, inputs, num_items_in_batch=None):
    """The batch's loss: the negative log-likelihood of its labelled tokens, summed, divided by
    `num_items_in_batch` (or by this batch's labelled tokens)."""
    import torch

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = causal_lm.base_model  # transformers' name for the decoder stack under the head
    hidden = backbone(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                      use_cache=False).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    head = causal_lm.get_output_embeddings()
    with torch.autocast(hidden.device.type, enabled=False):
        logits = head(hidden[:, :-1][keep].to(head.weight.dtype)).float()
    nll = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    count = keep.sum() if num_items_in_batch is None else num_items_in_batch
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
