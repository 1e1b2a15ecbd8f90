"""General user-assistant conversations: the auxiliary task mixed into A-Tuning so the model keeps its
general knowledge (the paper's multi-task regulariser).

Two formats: `alpaca` (a JSON list of {instruction, input, output}) and `dialogue` (JSONL of {"chosen": "\\n\\nHuman:
... \\n\\nAssistant: ..."}, as in HH-RLHF). Each example becomes a list of chat messages ending in an assistant turn;
training puts the loss on that last assistant turn only.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from behaviorlm.data.logs import DataError

Messages = list[dict[str, str]]
_TURN = re.compile(r"\n\n(Human|Assistant):")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _alpaca(path: Path) -> list[Messages]:
    with _open_text(path) as handle:
        records = json.load(handle)
    if not isinstance(records, list):
        raise DataError(f"aux corpus '{path}': expected a JSON list of {{instruction, input, output}} objects")
    conversations = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not str(record.get("instruction", "")).strip() or \
                not str(record.get("output", "")).strip():
            raise DataError(f"aux corpus '{path}': record {i} lacks a non-empty 'instruction' or 'output'")
        prompt = record["instruction"].strip()
        if str(record.get("input", "")).strip():
            prompt += "\n\n" + record["input"].strip()
        conversations.append([{"role": "user", "content": prompt},
                              {"role": "assistant", "content": record["output"].strip()}])
    return conversations


def parse_dialogue(text: str) -> Messages:
    """'\\n\\nHuman: a\\n\\nAssistant: b' -> chat messages; empty when the text has no such turns."""
    parts = _TURN.split(text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    while messages and (messages[-1]["role"] != "assistant" or not messages[-1]["content"]):
        messages.pop()
    return messages


def _dialogue(path: Path) -> list[Messages]:
    conversations = []
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"aux corpus '{path}': line {line_no} is not valid JSON ({err.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("chosen"), str):
                raise DataError(f"aux corpus '{path}': line {line_no} has no string field 'chosen'")
            messages = parse_dialogue(record["chosen"])
            if messages:
                conversations.append(messages)
    return conversations


def load_conversations(path: str | Path, fmt: str) -> list[Messages]:
    """Load an auxiliary corpus; every problem is one DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"aux corpus '{path}' does not exist (aux.path)")
    readers = {"alpaca": _alpaca, "dialogue": _dialogue}
    if fmt not in readers:
        raise DataError(f"aux.format = {fmt!r} is unknown: expected alpaca | dialogue")
    try:
        conversations = readers[fmt](path)
    except UnicodeDecodeError as err:
        raise DataError(f"aux corpus '{path}' is not UTF-8 text (offset {err.start})") from None
    except (json.JSONDecodeError, EOFError, OSError) as err:
        raise DataError(f"aux corpus '{path}' cannot be read as {fmt}: {err}") from None
    if not conversations:
        raise DataError(f"aux corpus '{path}' holds no usable conversation")
    return conversations
