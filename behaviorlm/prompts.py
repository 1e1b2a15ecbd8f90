"""Prompts: a behavior history rendered as an instruction whose answer is the next behavior's name.

Three formats (the paper samples among several so the model does not latch onto one wording). With
`include_target_time` the prompt also states when the predicted event happens (its weekday and hour), as
next-POI prompts do: "home" at 23h and "office" at 9h are different questions. The format of an
example is drawn from a seeded hash of the sample, so the same sample gets the same format in training, selection
and evaluation, whatever order it is seen in. The instruction goes through the model's chat template when it has
one. Token ids of the prompt and of the answer (name + end token) are built separately and concatenated, the same
way in training and scoring, so the scored sequence is exactly the trained one.
"""

from __future__ import annotations

import hashlib
from typing import Optional, Sequence

from behaviorlm.data.samples import Sample

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FORMATS = ("list", "sentence", "log")


Stamp = tuple[int, int]  # (weekday 0=Monday, hour)


def _list_format(history: Sequence[str], times: Sequence[Stamp], at: Optional[Stamp]) -> str:
    lines = [f"- {WEEKDAYS[d]} {h:02d}:00: {b}" for b, (d, h) in zip(history, times)]
    when = f" on {WEEKDAYS[at[0]]} at {at[1]:02d}:00" if at else " next"
    return ("Here are a user's most recent activities, oldest first:\n" + "\n".join(lines)
            + f"\nWhich activity will the user do{when}? Answer with the activity name only.")


def _sentence_format(history: Sequence[str], times: Sequence[Stamp], at: Optional[Stamp]) -> str:
    parts = [f"{b} ({WEEKDAYS[d][:3]} {h}h)" for b, (d, h) in zip(history, times)]
    when = f" at {at[1]}h on {WEEKDAYS[at[0]]}" if at else " next"
    return ("A person recently did the following, in order: " + "; ".join(parts)
            + f". Predict what this person does{when}. Reply with just the name of the activity.")


def _log_format(history: Sequence[str], times: Sequence[Stamp], at: Optional[Stamp]) -> str:
    lines = [f"{i}. [{WEEKDAYS[d][:3]} {h:02d}h] {b}" for i, (b, (d, h)) in enumerate(zip(history, times), 1)]
    when = f"{len(lines) + 1}. [{WEEKDAYS[at[0]][:3]} {at[1]:02d}h] ?" if at else "Next activity?"
    return "Activity log:\n" + "\n".join(lines) + f"\n{when}\nAnswer with the activity name only:"


RENDERERS = {"list": _list_format, "sentence": _sentence_format, "log": _log_format}


def render_instruction(history: Sequence[str], times: Sequence[Stamp], fmt: str,
                       at: Optional[Stamp] = None) -> str:
    """The instruction text; `at` (weekday, hour) of the predicted event, when the prompt states it."""
    return RENDERERS[fmt](history, times, at)


def draw_format(sample: Sample, formats: Sequence[str], seed: int) -> str:
    """A per-sample format choice that depends only on the sample and the seed (not on iteration order)."""
    key = f"{seed}|{sample.user}|{sample.time}|{len(sample.history)}".encode()
    return formats[int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little") % len(formats)]


class PromptBuilder:
    """Turns samples and conversations into token ids for one tokenizer."""

    def __init__(self, tokenizer, formats: Sequence[str] = FORMATS, use_chat_template: bool = True,
                 system_prompt: Optional[str] = None, seed: int = 0, max_prompt_tokens: int = 512,
                 include_target_time: bool = True):
        self.tokenizer = tokenizer
        self.formats = tuple(formats)
        self.chat = use_chat_template and getattr(tokenizer, "chat_template", None) is not None
        self.system_prompt = system_prompt
        self.seed = seed
        self.max_prompt_tokens = max_prompt_tokens
        self.include_target_time = include_target_time
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-sequence token; answers need one to end")
        self.end_id = tokenizer.eos_token_id

    def _messages(self, messages: list[dict]) -> list[dict]:
        if self.system_prompt is not None:
            return [{"role": "system", "content": self.system_prompt}] + messages
        return messages

    def render(self, messages: list[dict]) -> str:
        """The text before the assistant's answer."""
        if self.chat:
            return self.tokenizer.apply_chat_template(self._messages(messages), tokenize=False,
                                                      add_generation_prompt=True)
        turns = "\n\n".join(m["content"] for m in messages)
        return f"{turns}\nAnswer:"

    def encode_prompt(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]
        # Keep the end: it holds the question and the most recent history.
        return ids[-self.max_prompt_tokens:]

    def answer_ids(self, answer: str, max_tokens: Optional[int] = None) -> list[int]:
        text = answer if self.chat else " " + answer
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_tokens is not None:
            ids = ids[:max_tokens]
        return ids + [self.end_id]

    def instruction(self, sample: Sample) -> str:
        at = (sample.time.weekday(), sample.time.hour) if self.include_target_time else None
        return render_instruction(sample.history, sample.history_times, draw_format(sample, self.formats, self.seed),
                                  at)

    def sample_prompt_ids(self, sample: Sample) -> list[int]:
        return self.encode_prompt(self.render([{"role": "user", "content": self.instruction(sample)}]))

    def conversation_ids(self, messages: list[dict], max_response_tokens: int) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) for an auxiliary conversation: the loss falls on its last assistant turn."""
        return (self.encode_prompt(self.render(messages[:-1])),
                self.answer_ids(messages[-1]["content"], max_response_tokens))
