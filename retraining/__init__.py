"""The closed loop, arena votes retraining RLHF while the app serves (`python -m retraining`).

It composes the other packages (arena's votes, training's DPO/KTO, evaluation's judge, the
serving engine for the candidate's answers), so it is a package of its own: training never imports
the serving engine. One run, when `arena.retrain.min_new_votes` usable (unflagged) votes arrived since the last one:

1. export  the votes (arena.export: arena_preference, arena_negative, chat_feedback);
2. train   a candidate from the RAFT adapter (training.rlhf: DPO on the arena pairs + the Reddit
           pairs, or KTO on unpaired rows with `arena.retrain.method: kto`) into its OWN version
           folder, adapters/rlhf/<version>/, which nothing serves yet;
3. evaluate it against the served rlhf (or the start adapter before there is one) on the golden
           questions: the local probability judge, pairwise in both orders (evaluation.judge), and
           the Reddit-preference agreement (evaluation.reddit_preference's pairs: the share where
           the model gives the upvoted reply more log-probability per token than the other);
4. publish it (the atomic rewrite of adapters/rlhf/CURRENT, modeling.adapters) only when it does
           not regress by more than `arena.retrain.max_regression`; app processes then hot-swap
           it in (model.adapter_poll_s, chatbot.local_engine). A rejected candidate's folder is
           kept (for inspection) and marked REJECTED; it is never served.

Every step goes to a status file, paths.home/retrain_status.json (written atomically), which
the app shows in the Arena tab: state, last run, and why a candidate was rejected.

Crash safety. One loop at a time per home: an exclusive `flock` on paths.home/retrain.lock,
which the kernel releases when its process dies, so a kill -9 never leaves a stale lock. The
status says `running` while a run is under way; a run that finds it so while holding the lock
knows the previous one was killed: it logs that, deletes the unpublished candidate folder and
any half-written scratch folder, and starts the run again (its votes were not consumed). The
served version is untouched throughout: only step 4's pointer write changes what is served.

The worker shares the vote store with the app processes (SQLite file or PostgreSQL); it also
runs inside the app (`arena.retrain.in_app`), as a background thread.
"""

from retraining.config import PUBLISHED, REJECTED, REJECTED_MARKER, RUNNING, WAITING, RetrainConfig
from retraining.gate import Evaluation, gate
from retraining.loop import run_once, start_in_app, status_markdown
from retraining.status import read_status

__all__ = [
    "PUBLISHED", "REJECTED", "REJECTED_MARKER", "RUNNING", "WAITING",
    "Evaluation", "RetrainConfig", "gate", "read_status", "run_once", "start_in_app", "status_markdown",
]
