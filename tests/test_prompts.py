"""The three prompt formats, their seeded per-sample draw, and chat-template use."""

from behaviorlm.prompts import FORMATS, PromptBuilder, draw_format, render_instruction
from helpers import tiny_model_and_samples


def test_three_formats_render_every_history_event_in_order():
    history = ("Home", "Subway", "Office")
    times = ((0, 8), (0, 9), (2, 18))
    texts = {fmt: render_instruction(history, times, fmt) for fmt in FORMATS}
    assert len(set(texts.values())) == 3
    for fmt, text in texts.items():
        positions = [text.index(name) for name in history]
        assert positions == sorted(positions), fmt
    assert "Monday 08:00: Home" in texts["list"]
    assert "Office (Wed 18h)" in texts["sentence"]
    assert "3. [Wed 18h] Office" in texts["log"]


def test_format_draw_is_seeded_per_sample_and_uses_all_formats():
    _, _, samples, _, _ = tiny_model_and_samples()
    drawn = [draw_format(s, FORMATS, seed=0) for s in samples]
    assert drawn == [draw_format(s, FORMATS, seed=0) for s in reversed(samples)][::-1]
    assert set(drawn) == set(FORMATS)
    assert drawn != [draw_format(s, FORMATS, seed=1) for s in samples]
    assert {draw_format(s, ["log"], seed=0) for s in samples} == {"log"}


def test_chat_template_wraps_the_instruction_and_answers_end_with_the_end_token():
    _, tokenizer, samples, _, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer, seed=0)
    text = tokenizer.decode(builder.sample_prompt_ids(samples[0]))
    assert text.startswith("<|user|>") and text.endswith("<|assistant|>")
    assert samples[0].history[-1] in text
    answer = builder.answer_ids("Food Cafe")
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == "Food Cafe"
    plain = PromptBuilder(tokenizer, use_chat_template=False)
    assert tokenizer.decode(plain.sample_prompt_ids(samples[0])).endswith("Answer:")
    assert tokenizer.decode(plain.answer_ids("Food Cafe")[:-1]) == " Food Cafe"
