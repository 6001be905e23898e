"""One battle: pick two different models, give both the same context, stream both answers.

The Chatbot Arena crashes when no sampling weights are configured (it normalises a vector of
zeros). Here no weights means uniform, and a bad configuration is a clear error.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence

from arena.config import ArenaConfig
from arena.records import BattleRecord, VoteStore
from chatbot.engine import GenerationError


class NotEnoughModelsError(RuntimeError):
    """Fewer than two models can take part in a battle."""


class BattleFailed(RuntimeError):
    """A side could not answer; the message never names the model (anonymity)."""


def battle_weights(available: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """Weight per available model: configured value, 1 when not listed; zero weights dropped."""
    chosen = {name: float(weights.get(name, 1.0)) for name in dict.fromkeys(available)}
    return {name: weight for name, weight in chosen.items() if weight > 0}


def pick_pair(available: Sequence[str], weights: Mapping[str, float], rng: random.Random) -> tuple[str, str]:
    """Two different models, each drawn with its weight, then put on random sides."""
    candidates = battle_weights(available, weights)
    if len(candidates) < 2:
        served = ", ".join(available) or "none"
        raise NotEnoughModelsError(
            "The arena needs at least two models with a sampling weight above zero, but only "
            f"{len(candidates)} can battle (served: {served}). Train an adapter (python -m training ...) "
            "or check arena.sampling_weights."
        )
    names = list(candidates)
    first = rng.choices(names, weights=[candidates[n] for n in names])[0]
    rest = [n for n in names if n != first]
    second = rng.choices(rest, weights=[candidates[n] for n in rest])[0]
    # The weighted first draw favours heavy models for the first slot: swap half the time so
    # neither side is systematically the heavier model.
    return (first, second) if rng.random() < 0.5 else (second, first)


@dataclasses.dataclass(frozen=True)
class Battle:
    """What the server keeps about a running battle. Never sent to the browser."""

    battle_id: str
    conversation_id: str
    turn: int
    model_a: str
    model_b: str
    messages_a: list
    messages_b: list
    documents: list  # raft.Document both sides saw
    sampling: dict


def stream_battle(engine, messages_a, messages_b, model_a: str, model_b: str, sampling: dict) -> Iterator[tuple[str, str]]:
    """Yield (text_a, text_b) as both answers grow, until both are complete.

    Both sides run in ONE batched pass of the model, each row with its own adapter, so a battle
    takes about the time of one answer and the two sides stream together. Closing this
    generator (the user left) stops the generation.
    """
    # Both prompts are checked before anything is queued (GenerationError reaches the caller),
    # so a refused side never leaves the other one generating for nobody.
    rows = engine.generate_rows([(messages_a, model_a), (messages_b, model_b)], **sampling)
    texts = ["", ""]
    try:
        for side, piece in rows:
            texts[side] += piece
            yield texts[0], texts[1]
    except GenerationError as err:
        raise BattleFailed(f"the models could not answer ({type(err).__name__}); please start a new round") from err
    finally:
        rows.close()


class Arena:
    """Battles on one engine, recorded in one store."""

    def __init__(self, engine, store: VoteStore, rag, config: ArenaConfig, rng: random.Random | None = None):
        self.engine = engine
        self.store = store
        self.rag = rag  # chatbot.rag.RagChat or None (no retrieval)
        self.config = config
        self._rng = rng or random.SystemRandom()

    def available_models(self) -> list[str]:
        return list(battle_weights(self.engine.adapters, self.config.sampling_weights))

    def start(
        self, question: str, session: str, previous_battle_id: str | None = None, *, client: str | None = None
    ) -> Battle:
        """Record a new battle (or the next turn of `previous_battle_id`, same pair and sides),
        with the documents both sides are shown; `client` is the client address hash."""
        question = question.strip()
        if previous_battle_id:
            history = self.store.conversation(self._battle(previous_battle_id).conversation_id)
            last = history[-1]
            if last.vote is not None:
                raise ValueError("this round is over (it has a vote); start a new round")
            if not last.finished:
                raise ValueError("wait until both answers are complete")
            model_a, model_b = last.model_a, last.model_b
            conversation_id, turn = last.conversation_id, last.turn + 1
        else:
            history = []
            model_a, model_b = pick_pair(self.engine.adapters, self.config.sampling_weights, self._rng)
            conversation_id, turn = None, 0
        turns_a = _history(history, "a") + [{"role": "user", "content": question}]
        turns_b = _history(history, "b") + [{"role": "user", "content": question}]
        documents: list = []
        if self.rag is not None:
            # Retrieve once, for the shared question, and rewrite each side's last turn with the
            # same documents: only the model differs between the two answers.
            prepared = self.rag.prepare(turns_a, self.config.use_retrieval)
            documents = list(prepared.documents)
            turns_a = [dict(m) for m in prepared.messages]
            system = [m for m in turns_a if m.get("role") == "system"]
            turns_b = system + turns_b[:-1] + [dict(turns_a[-1])]
        sampling = dict(self.config.sampling)
        # The version each side's rows will run on (a hot swap moves new requests to a new
        # version: chatbot.local_engine); None for the base model and unversioned adapters.
        versions = getattr(self.engine, "adapter_versions", None) or {}
        battle_id = self.store.create_battle(
            session=session,
            question=question,
            model_a=model_a,
            model_b=model_b,
            messages_a=turns_a,
            messages_b=turns_b,
            documents=documents,
            sampling=sampling,
            conversation_id=conversation_id,
            turn=turn,
            client=client,
            version_a=versions.get(model_a) or None,
            version_b=versions.get(model_b) or None,
        )
        record = self._battle(battle_id)
        return Battle(
            battle_id, record.conversation_id, turn, model_a, model_b, turns_a, turns_b, documents, sampling
        )

    def answer(self, battle: Battle) -> Iterator[tuple[str, str]]:
        """Stream both answers as (text_a, text_b); store them once both are complete."""
        text_a = text_b = ""
        for text_a, text_b in stream_battle(
            self.engine, battle.messages_a, battle.messages_b, battle.model_a, battle.model_b, battle.sampling
        ):
            yield text_a, text_b
        self.store.finish_battle(battle.battle_id, text_a, text_b)

    def display(self, text: str, battle: Battle) -> str:
        """What the user sees for an answer: RAG post-processing (quotes, sources) when on."""
        if self.rag is None:
            return text
        return self.rag.postprocess(text, battle.documents).display_markdown

    def _battle(self, battle_id: str) -> BattleRecord:
        record = self.store.battle(battle_id)
        if record is None:
            raise ValueError(f"unknown battle {battle_id!r}")
        return record


def _history(turns: list[BattleRecord], side: str) -> list[dict]:
    """Earlier turns as each side saw them: the plain questions and that side's own answers."""
    messages = []
    for turn in turns:
        answer = turn.answer_a if side == "a" else turn.answer_b
        messages += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": answer or ""}]
    return messages
