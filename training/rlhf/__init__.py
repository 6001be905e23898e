"""Step `rlhf`: learning from human preferences on top of the RAFT adapter.

(a) A reward model: the base checkpoint as a one-score sequence classifier in 4-bit with LoRA,
    trained with trl's RewardTrainer on the preference pairs (Reddit scores) plus every arena
    vote exported so far; its pairwise accuracy on the held-out preference slice is reported.
    Saved as paths.adapters/reward (not served by the chatbot).
(b) DPO (default): the RAFT adapter is loaded as the trainable policy, and trl copies it into a
    frozen "ref" adapter that serves as the reference model, so DPO is anchored to RAFT rather
    than to the bare base. Saved as paths.adapters/rlhf.
(c) `--method online`: GRPO (or RLOO) from the RAFT adapter, answers scored by the reward model.

One module per method (reward.py, dpo.py, kto.py, online.py) on the shared data.py; this module
is the `python -m training rlhf` step that runs them in order.
"""


from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeling.adapters import ADAPTER_CONFIG_FILE
from settings import ConfigError, Settings, apply_runtime
from training.adapter_output import TrainingResult, read_metadata
from training.errors import TrainingError
from training.config import TrainingConfig
from training.rlhf.data import RLHF_ADAPTER, REWARD_ADAPTER, require_start_adapter
from training.rlhf.dpo import DpoRun, dpo_inputs, prepare_dpo
from training.rlhf.kto import prepare_kto
from training.rlhf.online import online_inputs, train_online
from training.rlhf.reward import RewardScorer, reward_inputs, train_reward

__all__ = [
    "REWARD_ADAPTER", "RLHF_ADAPTER", "DpoRun", "RewardScorer", "configure", "dpo_inputs", "is_current",
    "online_inputs", "prepare_dpo", "prepare_kto", "reward_inputs", "run", "run_rlhf", "train_online", "train_reward",
]



def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["dpo", "online"], default=None,
                        help="dpo (default: training.rlhf_method) or online (GRPO/RLOO with the reward model)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each trainer after this many steps")
    parser.add_argument("--retrain-reward", action="store_true",
                        help="train the reward model again even when it is current")


def run(args: argparse.Namespace, settings: Settings) -> int:
    apply_runtime(settings)
    try:
        results = run_rlhf(settings, method=args.method, max_steps=args.max_steps, retrain_reward=args.retrain_reward)
    except (TrainingError, ConfigError) as err:
        print(f"rlhf: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(result.summary())
    return 0


def run_rlhf(settings: Settings, *, method: str | None = None, max_steps: int | None = None,
             retrain_reward: bool = False) -> list[TrainingResult]:
    """Reward model (unless current), then DPO or online RL; returns what was trained."""
    config = TrainingConfig.from_settings(settings)
    method = method or config.rlhf_method
    require_start_adapter(settings, config)  # refuse before spending minutes on the reward model
    results = []
    reward_dir = settings.path("adapters") / REWARD_ADAPTER
    if retrain_reward or max_steps is not None or not is_current(reward_dir, reward_inputs(settings)[0]):
        results.append(train_reward(settings, max_steps=max_steps))
    else:
        print(f"reward model at {reward_dir} is current (same data and settings): reusing it")
    if method == "dpo":
        results.append(prepare_dpo(settings, max_steps=max_steps).train())
    else:
        results.append(train_online(settings, max_steps=max_steps))
    return results


def is_current(adapter_dir: Path, fingerprint: str) -> bool:
    metadata = read_metadata(adapter_dir)
    return bool(metadata) and metadata.get("inputs_fingerprint") == fingerprint and (
        Path(adapter_dir) / ADAPTER_CONFIG_FILE).exists()
