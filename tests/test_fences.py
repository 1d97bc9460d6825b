"""The code-fence converter, fed every reply whole and in chunks of 1, 2, 3 and 7 characters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamchat.artifact_ids import ArtifactIds
from streamchat.artifacts import ParsedEvent
from streamchat.events import ArtifactCompleted, ArtifactContent, ArtifactStarted, TextChunk
from streamchat.fences import MAX_FENCE_LINE, FenceParser
from tests import chunking
from tests.chunking import completed, feed_split, merged, texts

HELLO = "Voilà, 日本 🚀:\n```python\ndef hello():\n    print('Héllo, 🚀 日本!')\n```\nRun it. é"
HELLO_BODY = "def hello():\n    print('Héllo, 🚀 日本!')"


def feed_in_chunks(
    text: str, size: int | None, parser: FenceParser | None = None
) -> list[ParsedEvent]:
    return chunking.feed_in_chunks(parser if parser is not None else FenceParser(), text, size)


def only_artifact(text: str, size: int | None) -> ArtifactCompleted:
    (artifact,) = completed(feed_in_chunks(text, size))
    return artifact


# --- the shape of the events ----------------------------------------------------------------


def test_hello_world_fence_gives_prose_started_content_completed_prose(size: int | None) -> None:
    events = feed_in_chunks(HELLO, size)

    assert events == [
        TextChunk("Voilà, 日本 🚀:\n"),
        ArtifactStarted("snippet-py", "code", "snippet.py", "python"),
        ArtifactContent("snippet-py", HELLO_BODY),
        ArtifactCompleted("snippet-py", "code", "snippet.py", "python", HELLO_BODY),
        TextChunk("Run it. é"),
    ]


def test_the_newline_before_the_closing_fence_is_the_only_one_dropped(size: int | None) -> None:
    assert only_artifact("```\n\nx\n\n```", size).content == "\nx\n"


def test_a_closing_fence_at_the_very_end_needs_no_newline(size: int | None) -> None:
    events = feed_in_chunks("```python\nprint(1)\n```", size)

    assert events[1:] == [
        ArtifactContent("snippet-py", "print(1)"),
        ArtifactCompleted("snippet-py", "code", "snippet.py", "python", "print(1)"),
    ]


def test_two_fences_in_one_chunk(size: int | None) -> None:
    text = "A\n```js\nfirst()\n```\nB\n~~~ruby\nsecond\n~~~\nC"

    events = feed_in_chunks(text, size)

    assert texts(events) == ["A\n", "B\n", "C"]
    assert [(a.artifact_id, a.language, a.content) for a in completed(events)] == [
        ("snippet-js", "javascript", "first()"),
        ("snippet-rb", "ruby", "second"),
    ]


def test_fences_back_to_back_need_no_prose_between(size: int | None) -> None:
    events = feed_in_chunks("```\na\n```\n```\nb\n```\n", size)

    assert [a.content for a in completed(events)] == ["a", "b"]
    assert texts(events) == []


def test_empty_fences_give_empty_content_and_no_deltas(size: int | None) -> None:
    for text in ["```\n```", "```python\n```\n", "```\n\n```", "~~~\n~~~"]:
        events = feed_in_chunks(text, size)

        assert not any(isinstance(event, ArtifactContent) for event in events)
        assert completed(events)[0].content == ""


def test_crlf_line_endings_are_kept_inside_and_dropped_at_the_edges(size: int | None) -> None:
    text = "Intro\r\n```python\r\nline1\r\n\r\nline2\r\n```\r\nOutro\r\n"

    events = feed_in_chunks(text, size)

    assert texts(events) == ["Intro\r\n", "Outro\r\n"]
    assert completed(events)[0].content == "line1\r\n\r\nline2"
    assert completed(events)[0].language == "python"


def test_a_lone_carriage_return_in_a_body_is_content(size: int | None) -> None:
    assert only_artifact("```\na\rb\r\n```", size).content == "a\rb"


# --- language and title ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "language"),
    [
        ("Python", "python"),
        ("py", "python"),
        ("js", "javascript"),
        ("ts", "typescript"),
        ("sh", "bash"),
        ("shell", "bash"),
        ("zsh", "bash"),
        ("yml", "yaml"),
        ("C++", "cpp"),
        ("cs", "csharp"),
        ("C#", "csharp"),
        ("rb", "ruby"),
        ("rs", "rust"),
        ("golang", "go"),
        ("kotlin", "kotlin"),
        ("python {linenos=true}", "python"),
    ],
)
def test_language_is_the_first_word_lower_cased_with_aliases_normalised(
    info: str, language: str, size: int | None
) -> None:
    assert only_artifact(f"```{info}\nx\n```", size).language == language


@pytest.mark.parametrize(
    ("info", "title"),
    [
        ("python", "snippet.py"),
        ("javascript", "snippet.js"),
        ("typescript", "snippet.ts"),
        ("bash", "snippet.sh"),
        ("html", "snippet.html"),
        ("css", "snippet.css"),
        ("json", "snippet.json"),
        ("yaml", "snippet.yml"),
        ("rust", "snippet.rs"),
        ("go", "snippet.go"),
        ("java", "snippet.java"),
        ("c", "snippet.c"),
        ("cpp", "snippet.cpp"),
        ("csharp", "snippet.cs"),
        ("ruby", "snippet.rb"),
        ("sql", "snippet.sql"),
        ("markdown", "snippet.md"),
        ("text", "snippet.txt"),
        ("", "snippet.txt"),
        ("kotlin", "snippet.kotlin"),
    ],
)
def test_a_fence_without_a_file_name_is_titled_snippet_with_its_extension(
    info: str, title: str, size: int | None
) -> None:
    assert only_artifact(f"```{info}\nx\n```", size).title == title


def test_no_info_string_means_no_language(size: int | None) -> None:
    artifact = only_artifact("```\nx\n```", size)

    assert (artifact.artifact_id, artifact.language) == ("snippet-txt", None)


@pytest.mark.parametrize(
    ("info", "language", "title"),
    [
        ("python hello.py", "python", "hello.py"),
        ("python title=hello.py", "python", "hello.py"),
        ('python title="hello.py"', "python", "hello.py"),
        ("python title='hello.py'", "python", "hello.py"),
        ("hello.py", "python", "hello.py"),
        ("src/app.ts", "typescript", "src/app.ts"),
        ("title=index.html", "html", "index.html"),
        ("bash run-all.sh", "bash", "run-all.sh"),
        ("python 1.5", "python", "snippet.py"),
    ],
)
def test_title_comes_from_a_file_name_in_the_info_string(
    info: str, language: str, title: str, size: int | None
) -> None:
    artifact = only_artifact(f"Here:\n```{info}\nx\n```", size)

    assert (artifact.language, artifact.title) == (language, title)


@pytest.mark.parametrize(
    "line",
    [
        "hello.py",
        "**hello.py**",
        "`hello.py`",
        "hello.py:",
        "### hello.py",
        "**`hello.py`**:",
        "**hello.py:**",
        "  src/hello.py  ",
    ],
)
def test_title_comes_from_a_prose_line_that_is_only_a_file_name(
    line: str, size: int | None
) -> None:
    text = f"Save this é:\n\n{line}\n```python\nx\n```"

    events = feed_in_chunks(text, size)

    assert texts(events) == [f"Save this é:\n\n{line}\n"]
    assert completed(events)[0].title == line.strip(" #*`:")


def test_blank_lines_between_the_name_line_and_the_fence_are_skipped(size: int | None) -> None:
    assert only_artifact("app.js\n\n  \n```js\nx\n```", size).title == "app.js"


def test_the_info_string_wins_over_the_name_line(size: int | None) -> None:
    assert only_artifact("app.js\n```js main.js\nx\n```", size).title == "main.js"


@pytest.mark.parametrize(
    "line",
    ["Save this as hello.py:", "hello.py and more", "Step 1.5", "**hello.py", "x" * 250 + ".py"],
)
def test_a_prose_line_with_more_than_a_file_name_gives_no_title(
    line: str, size: int | None
) -> None:
    assert only_artifact(f"{line}\n```python\nx\n```", size).title == "snippet.py"


def test_a_name_line_titles_only_the_fence_right_after_it(size: int | None) -> None:
    text = "main.py\n```python\na\n```\n```python\nb\n```\nmain.py\nthen prose\n```\nc\n```"

    assert [a.title for a in completed(feed_in_chunks(text, size))] == [
        "main.py",
        "snippet.py",
        "snippet.txt",
    ]


def test_a_repeated_title_gets_distinct_ids_through_one_shared_ids(size: int | None) -> None:
    ids = ArtifactIds()
    text = "```python\n1\n```\nhello.py\n```python\n2\n```\n```hello.py\n3\n```"

    first = completed(feed_in_chunks(text, size, FenceParser(ids)))
    second = completed(feed_in_chunks(text, size, FenceParser(ids)))

    assert [a.artifact_id for a in first + second] == [
        "snippet-py",
        "hello-py",
        "hello-py-2",
        "snippet-py-2",
        "hello-py-3",
        "hello-py-4",
    ]


# --- what is and is not a fence -------------------------------------------------------------


def test_tildes_make_a_fence_that_backticks_do_not_close(size: int | None) -> None:
    artifact = only_artifact("~~~python\n```\nx\n```\n~~~", size)

    assert (artifact.language, artifact.content) == ("python", "```\nx\n```")


def test_a_four_backtick_fence_keeps_a_three_backtick_line_as_content(size: int | None) -> None:
    body = "Use:\n```python\nprint(1)\n```"

    assert only_artifact(f"````markdown\n{body}\n`````\nafter", size).content == body


def test_closing_fence_may_have_trailing_spaces_and_tabs(size: int | None) -> None:
    events = feed_in_chunks("```\nx\n```  \t \nafter", size)

    assert completed(events)[0].content == "x"
    assert texts(events) == ["after"]


def test_a_closing_lookalike_with_text_after_it_is_content(size: int | None) -> None:
    body = "``` x\n``\n    ```\n~~~"

    assert only_artifact(f"```\n{body}\n```", size).content == body


def test_fences_indented_up_to_three_spaces_lose_that_indent_from_body_lines(
    size: int | None,
) -> None:
    text = "1. Install:\n  ```bash\n  pip install x\n    indented\n no\n   ```\nDone"

    events = feed_in_chunks(text, size)

    assert texts(events) == ["1. Install:\n", "Done"]
    assert completed(events)[0].content == "pip install x\n  indented\nno"


def test_four_spaces_of_indent_is_prose_not_a_fence(size: int | None) -> None:
    text = "    ```python\n    x = 1\n    ```\n"

    assert feed_in_chunks(text, size) == [TextChunk(text)]


@pytest.mark.parametrize(
    "prose",
    [
        "Use ``code`` or `x`.\n``not a fence``\n",
        "Type ``` in the middle of a line.\n",
        "Here ~~~ too\n",
        "```inline``` code at a line start\n",
        "``` py`thon\nx\n",
        "``\n~~\n`~`\n",
        "\tx\n\t```\n",
    ],
)
def test_lookalikes_of_an_opening_fence_stay_prose(prose: str, size: int | None) -> None:
    assert feed_in_chunks(prose, size) == [TextChunk(prose)]


def test_a_tilde_info_string_may_contain_backticks(size: int | None) -> None:
    assert only_artifact("~~~ py `x`\nx\n~~~", size).language == "python"


def test_a_fence_line_longer_than_the_limit_is_prose(size: int | None) -> None:
    line = "```" + "a" * MAX_FENCE_LINE + "\n"

    assert feed_in_chunks(line + "x\n", size) == [TextChunk(line + "x\n")]


# --- the end of the stream ------------------------------------------------------------------


def test_an_unclosed_fence_completes_truncated_with_everything_held_back(
    size: int | None,
) -> None:
    events = feed_in_chunks("Intro 日本\n```python\nprint('🚀')\n``", size)

    assert events[0] == TextChunk("Intro 日本\n")
    assert events[-1] == ArtifactCompleted(
        "snippet-py", "code", "snippet.py", "python", "print('🚀')\n``", truncated=True
    )


def test_an_unclosed_fence_keeps_its_final_newline(size: int | None) -> None:
    artifact = only_artifact("```\na\r\n", size)

    assert (artifact.content, artifact.truncated) == ("a\r\n", True)


def test_a_stream_ending_after_the_opening_line_completes_empty_and_truncated(
    size: int | None,
) -> None:
    events = feed_in_chunks("```python\n", size)

    assert events == [
        ArtifactStarted("snippet-py", "code", "snippet.py", "python"),
        ArtifactCompleted("snippet-py", "code", "snippet.py", "python", "", truncated=True),
    ]


@pytest.mark.parametrize("tail", ["`", "``", "```", "```python", "   ~~~ x", "  "])
def test_an_opening_line_without_its_newline_at_the_end_is_prose(
    tail: str, size: int | None
) -> None:
    assert feed_in_chunks(f"see\n{tail}", size) == [TextChunk(f"see\n{tail}")]


# --- streaming --------------------------------------------------------------------------------


def test_prose_streams_at_once_holding_back_only_a_possible_opening_line() -> None:
    parser = FenceParser()

    assert parser.feed("Hello ``` x") == [TextChunk("Hello ``` x")]
    assert parser.feed("\n``") == [TextChunk("\n")]
    assert parser.feed("x") == [TextChunk("``x")]
    assert parser.feed("\n   ~~") == [TextChunk("\n")]
    assert parser.feed("~ python") == []
    assert parser.feed("\n") == [ArtifactStarted("snippet-py", "code", "snippet.py", "python")]


def test_body_lines_stream_holding_back_only_a_possible_closing_line() -> None:
    parser = FenceParser()
    parser.feed("```\n")

    assert parser.feed("a = 1") == [ArtifactContent("snippet-txt", "a = 1")]
    assert parser.feed("\r") == []
    assert parser.feed("\n``") == []
    assert parser.feed("`") == []
    assert parser.feed("`x") == [ArtifactContent("snippet-txt", "\r\n````x")]
    assert parser.feed("\n```") == []
    assert parser.feed("\n") == [
        ArtifactCompleted("snippet-txt", "code", "snippet.txt", None, "a = 1\r\n````x")
    ]


def test_one_feed_of_many_lines_gives_one_event_per_run() -> None:
    parser = FenceParser()

    events = parser.feed("a\nb\n```\n1\n2\n```\nc\nd")

    assert [type(event).__name__ for event in events] == [
        "TextChunk",
        "ArtifactStarted",
        "ArtifactContent",
        "ArtifactCompleted",
        "TextChunk",
    ]


def test_every_two_piece_split_gives_the_same_events() -> None:
    text = "é\n``x\nmain.py:\n  ```` py main.py\r\n 🚀\n```\n  ````  \r\n~~~\n日本\n~~~ \n```\n`"
    whole = feed_in_chunks(text, None)

    for cut in range(len(text) + 1):
        parser = FenceParser()

        events = merged(parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.flush())

        assert events == whole, cut


# What fences are made of, and what sits beside them.
FENCE_PIECES = ["```", "````", "~~~", "`", "~", "\n", "\r\n", "\r", " ", "\t", "py", "python"]
FENCE_PIECES += ["```py", "main.py", ":", "x", "é", "🚀", "****"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FENCE_PIECES), max_size=40), st.lists(st.integers(0, 999)))
def test_any_reply_cut_anywhere_gives_the_events_it_gives_whole(
    pieces: list[str], cuts: list[int]
) -> None:
    text = "".join(pieces)

    assert feed_split(FenceParser(), text, cuts) == feed_in_chunks(text, None)


def test_a_long_reply_fed_one_character_at_a_time_converts_completely() -> None:
    blocks = [f"Step {n}:\n```python\nprint('🚀 {n}')\n```\n" for n in range(2500)]
    text = "".join(blocks)
    parser = FenceParser()

    events = merged([event for char in text for event in parser.feed(char)] + parser.flush())

    assert len(text) > 100_000
    assert [a.artifact_id for a in completed(events)][-2:] == ["snippet-py-2499", "snippet-py-2500"]
    assert [a.content for a in completed(events)][:2] == ["print('🚀 0')", "print('🚀 1')"]
    assert "".join(texts(events)) == "".join(f"Step {n}:\n" for n in range(2500))


@pytest.mark.parametrize(
    ("answer", "closing"),
    [
        ("no code at all", ""),
        ("```python\nx = 1\n```", ""),
        ("```python\nx = 1\n```  ", ""),
        ("```python\nx = 1\n```\nDone.", ""),
        ("```python\nx = 1", "\n```"),
        ("```python\nx = 1\n", "```"),
        ("~~~~\nx = 1\n``", "\n~~~~"),
        ("````md\n```\nx\n```", "\n````"),
    ],
)
def test_closing_is_what_an_open_fence_still_needs(answer: str, closing: str) -> None:
    for size in (1, 2, 3, 7, len(answer)):
        parser = FenceParser()
        for start in range(0, len(answer), size):
            parser.feed(answer[start : start + size])

        assert parser.closing() == closing, (answer, size)
