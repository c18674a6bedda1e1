"""What TRL's SFTTrainer lacks and `rait train` needs, written here by hand:

- a completion head: the LM head and the loss computed only at completion positions (the prompt's
  logits are never materialised: on a 262k-vocabulary model that is most of the memory and time),
- per-sample weights in the loss (a RAIT set may weight its rows),
- a collator that carries those weights through TRL's padding.
"""

from __future__ import annotations

import functools
import types

def completion_nll(hidden, labels, lm_head, softcap: float | None = None):
    """Next-token NLL at completion positions only.

    hidden (B, T, H) decoder output; labels (B, T) with -100 where no loss is taken.
    Returns nll (N,) for the N positions whose shifted label is kept, and their mask (B, T-1).
    """
    import torch
    import torch.nn.functional as F

    targets = labels[:, 1:]  # position t predicts token t+1
    mask = targets != -100
    picked = hidden[:, :-1][mask]  # (N, H)
    logits = lm_head(picked).float()  # (N, V): the head runs only here (a module call, so ZeRO-3 can gather it)
    if softcap:  # Gemma: logits -> cap * tanh(logits / cap), as the model's own forward does
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets[mask], reduction="none"), mask


def add_completion_head(causal_lm) -> None:
    """Let `causal_lm(..., completion_labels=labels)` return `completion_nll(...)` instead of logits.

    The forward is patched (as TRL patches its own fused head) rather than the modules called from
    outside, so the call still goes through PEFT, DDP, FSDP and DeepSpeed wrappers. Without
    `completion_labels` the original forward runs, so generation is unchanged.
    """
    inner_forward = causal_lm.forward
    softcap = getattr(causal_lm.config.get_text_config(), "final_logit_softcapping", None)

    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args, completion_labels=None, **kwargs):
        if completion_labels is None:
            return inner_forward(*args, **kwargs)
        # PEFT passes labels=None, return_dict=None, ...: the decoder needs none of them
        kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "labels"}
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state  # the decoder, without the LM head
        return completion_nll(hidden, completion_labels, self.get_output_embeddings(), softcap)

    causal_lm.forward = types.MethodType(forward, causal_lm)


def completion_weight_total(labels, weights, *, absolute: bool = False):
    """The loss denominator's share of one batch: sum_i w_i * n_i, the weighted count of completion
    tokens (n_i counted on shifted labels); with absolute weights the plain count sum_i n_i, so
    that a row's weight scales its contribution instead of only its share of the step."""
    counts = (labels[:, 1:] != -100).sum(dim=1).to(weights.dtype)
    return counts.sum() if absolute else (counts * weights).sum()


def weighted_token_loss(nll, mask, weights, denominator=None):
    """sum_i w_i * sum_t nll_it / denominator (default sum_i w_i * n_i: the weighted token mean)."""
    import torch

    token_weights = weights.to(nll.dtype)[:, None].expand(mask.shape)[mask]  # (N,)
    total = (nll * token_weights).sum()
    if denominator is None:
        denominator = token_weights.sum()
    # a batch of zero-weight rows (total 0) divides by 1: a finite zero, not 0 / 0; any positive
    # denominator, however small, gives the exact weighted mean
    denominator = torch.as_tensor(denominator, dtype=total.dtype, device=total.device)
    return total / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


@functools.cache
def completion_trainer_class():
    """`SFTTrainer` with the completion-head loss and per-sample weights (built on first use so that
    importing this module does not import TRL)."""
    import torch
    from trl import SFTTrainer

    class CompletionHeadSFTTrainer(SFTTrainer):
        # The loss below is already normalised by the whole step's weighted token count.
        loss_is_scaled_for_ga = True
        absolute_weights = False  # set by rait.stages.train (TrainConfig.weighting)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            add_completion_head(model)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "weight" not in self._signature_columns:  # keep the per-sample weight for the collator
                self._signature_columns = [*self._signature_columns, "weight"]

        def _get_num_items_in_batch(self, batch_samples, device):
            if not batch_samples:
                return None
            total = sum(completion_weight_total(b["labels"], b["sample_weight"], absolute=self.absolute_weights)
                        for b in batch_samples)
            total = torch.as_tensor(total, dtype=torch.float32, device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                total = self.accelerator.gather(total).sum()
            return total

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights, labels = inputs.pop("sample_weight"), inputs.pop("labels")
            nll, mask = model(**inputs, completion_labels=labels)
            loss = weighted_token_loss(nll, mask, weights, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
            return (loss, None) if return_outputs else loss

    return CompletionHeadSFTTrainer


def weighted_collator(pad_token_id: int):
    """TRL's collator + a `sample_weight` tensor (B,) from each row's `weight`."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def collate(examples: list[dict]) -> dict:
        batch = base(examples)
        batch["sample_weight"] = torch.tensor([float(ex.get("weight", 1.0)) for ex in examples])
        return batch

    return collate
