"""The artifact parser, fed every reply whole and in chunks of 1, 2, 3 and 7 characters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamchat.artifact_ids import ArtifactIds
from streamchat.artifacts import MAX_TAG_CHARS, ArtifactParser, ParsedEvent
from streamchat.events import ArtifactCompleted, ArtifactContent, ArtifactStarted, TextChunk
from tests import chunking
from tests.chunking import completed, feed_split, merged, texts

HELLO = (
    "Here you go:\n"
    '<artifact id="hello-py" type="code" title="hello.py" language="python">\n'
    "def hello():\n"
    "    print('Hello, World!')\n"
    "</artifact>\n"
    "Enjoy."
)
HELLO_BODY = "def hello():\n    print('Hello, World!')"


def feed_in_chunks(
    text: str, size: int | None, parser: ArtifactParser | None = None
) -> list[ParsedEvent]:
    return chunking.feed_in_chunks(parser if parser is not None else ArtifactParser(), text, size)


def only_artifact(text: str, size: int | None) -> ArtifactCompleted:
    (artifact,) = completed(feed_in_chunks(text, size))
    return artifact


def test_hello_example_gives_prose_started_content_completed_prose(size: int | None) -> None:
    events = feed_in_chunks(HELLO, size)

    assert events == [
        TextChunk("Here you go:\n"),
        ArtifactStarted("hello-py", "code", "hello.py", "python"),
        ArtifactContent("hello-py", HELLO_BODY),
        ArtifactCompleted("hello-py", "code", "hello.py", "python", HELLO_BODY),
        TextChunk("\nEnjoy."),
    ]


def test_deltas_add_up_to_content_and_stream_before_the_closing_tag() -> None:
    parser = ArtifactParser()

    first = parser.feed('<artifact id="a">\nline one\n')
    second = parser.feed("line two\n</artifact>")

    assert first == [ArtifactStarted("a", "code", "Untitled"), ArtifactContent("a", "line one")]
    assert second == [
        ArtifactContent("a", "\nline two"),
        ArtifactCompleted("a", "code", "Untitled", None, "line one\nline two"),
    ]


def test_started_comes_as_soon_as_the_opening_tag_ends() -> None:
    parser = ArtifactParser()

    assert parser.feed('<artifact id="a" title="t"') == []
    assert parser.feed(">") == [ArtifactStarted("a", "code", "t")]


def test_prose_streams_at_once_holding_back_only_a_possible_tag_start() -> None:
    parser = ArtifactParser()

    assert parser.feed("Hello") == [TextChunk("Hello")]
    assert parser.feed(" a<b and <art") == [TextChunk(" a<b and ")]
    assert parser.feed("work") == [TextChunk("<artwork")]


def test_a_final_newline_in_a_body_waits_for_what_follows() -> None:
    parser = ArtifactParser()
    parser.feed("<artifact>\ncode\n")

    assert parser.feed("more") == [ArtifactContent("untitled", "\nmore")]


def test_two_artifacts_in_one_chunk(size: int | None) -> None:
    text = (
        'A <artifact id="one" title="1">\nfirst\n</artifact> B '
        '<artifact id="two" title="2">\nsecond\n</artifact> C'
    )

    events = feed_in_chunks(text, size)

    assert texts(events) == ["A ", " B ", " C"]
    assert [(a.artifact_id, a.content) for a in completed(events)] == [
        ("one", "first"),
        ("two", "second"),
    ]


def test_unclosed_artifact_completes_truncated_with_everything_held_back(
    size: int | None,
) -> None:
    events = feed_in_chunks('Intro <artifact id="a">\ncode\n</arti', size)

    assert events[0] == TextChunk("Intro ")
    assert events[-1] == ArtifactCompleted(
        "a", "code", "Untitled", None, "code\n</arti", truncated=True
    )


def test_stream_ending_right_after_the_opening_tag_completes_empty_and_truncated(
    size: int | None,
) -> None:
    events = feed_in_chunks('<artifact id="a">', size)

    assert events == [
        ArtifactStarted("a", "code", "Untitled"),
        ArtifactCompleted("a", "code", "Untitled", None, "", truncated=True),
    ]


@pytest.mark.parametrize(
    "prose",
    [
        "Use <artifacts> for many.",
        "a <artifact_x> b",
        "<artifactfoo bar>",
        "< artifact id='x'>",
        "x </artifact> y",
        "<artifact/x>",
        "1 < 2 <b>bold</b> <<artifac",
    ],
)
def test_lookalike_tags_stay_prose_unchanged(prose: str, size: int | None) -> None:
    assert feed_in_chunks(prose, size) == [TextChunk(prose)]


@pytest.mark.parametrize("tail", ["<", "<art", "<artifact", "<ARTIFACT", "<artifact/"])
def test_a_partial_tag_at_the_end_of_the_stream_comes_out_as_prose(
    tail: str, size: int | None
) -> None:
    assert feed_in_chunks(f"see {tail}", size) == [TextChunk(f"see {tail}")]


def test_single_quotes_and_other_attribute_order(size: int | None) -> None:
    text = "<artifact language='js' title='app.js' type='code' id='app'>\nx()\n</artifact>"

    assert only_artifact(text, size) == ArtifactCompleted("app", "code", "app.js", "js", "x()")


def test_newlines_between_attributes_unknown_ones_and_uppercase_names(
    size: int | None,
) -> None:
    text = '<artifact\n  ID="doc"\n\tversion="2"\n  TITLE="Notes" Type="document">\nhi\n</artifact>'

    assert only_artifact(text, size) == ArtifactCompleted("doc", "document", "Notes", None, "hi")


def test_a_quoted_greater_than_does_not_end_the_opening_tag(size: int | None) -> None:
    text = '<artifact title="a -> b">\nbody\n</artifact>'

    assert only_artifact(text, size).title == "a -> b"


def test_missing_id_is_made_up_from_the_title(size: int | None) -> None:
    text = '<artifact title="hello.py">\nx\n</artifact>'

    assert only_artifact(text, size).artifact_id == "hello-py"


def test_artifact_without_attributes_gets_defaults(size: int | None) -> None:
    assert only_artifact("<artifact>\nx\n</artifact>", size) == ArtifactCompleted(
        "untitled", "code", "Untitled", None, "x"
    )


def test_repeated_id_gets_a_different_id_the_second_time(size: int | None) -> None:
    text = '<artifact id="a">\n1\n</artifact><artifact id="a">\n2\n</artifact>'

    events = feed_in_chunks(text, size)

    assert [a.artifact_id for a in completed(events)] == ["a", "a-2"]
    assert ArtifactContent("a-2", "2") in events


def test_ids_shared_across_parsers_stay_unique(size: int | None) -> None:
    ids = ArtifactIds()
    text = '<artifact id="a">\n1\n</artifact>'

    first = completed(feed_in_chunks(text, size, ArtifactParser(ids)))
    second = completed(feed_in_chunks(text, size, ArtifactParser(ids)))

    assert (first[0].artifact_id, second[0].artifact_id) == ("a", "a-2")


def test_missing_type_is_code_and_empty_language_is_none(size: int | None) -> None:
    artifact = only_artifact('<artifact id="a" language="">\nx\n</artifact>', size)

    assert (artifact.artifact_type, artifact.language) == ("code", None)


def test_self_closing_tag_is_an_empty_artifact(size: int | None) -> None:
    events = feed_in_chunks('a <artifact id="e" title="Empty" /> b<artifact/>', size)

    assert events == [
        TextChunk("a "),
        ArtifactStarted("e", "code", "Empty"),
        ArtifactCompleted("e", "code", "Empty", None, ""),
        TextChunk(" b"),
        ArtifactStarted("untitled", "code", "Untitled"),
        ArtifactCompleted("untitled", "code", "Untitled", None, ""),
    ]


def test_multibyte_characters_in_prose_and_body(size: int | None) -> None:
    text = 'héllo 🚀 日本 <artifact id="u">\nhéllo 🚀 日本\n</artifact> 🚀日本'

    events = feed_in_chunks(text, size)

    assert texts(events) == ["héllo 🚀 日本 ", " 🚀日本"]
    assert completed(events)[0].content == "héllo 🚀 日本"


def test_crlf_after_the_opening_tag_and_before_the_closing_tag(size: int | None) -> None:
    text = '<artifact id="w">\r\nline1\r\nline2\r\n</artifact>'

    assert only_artifact(text, size).content == "line1\r\nline2"


def test_only_one_newline_on_each_side_is_dropped(size: int | None) -> None:
    assert only_artifact("<artifact>\n\nx\n\n</artifact>", size).content == "\nx\n"


def test_empty_bodies_give_empty_content_and_no_deltas(size: int | None) -> None:
    for text in ["<artifact></artifact>", "<artifact>\n</artifact>", "<artifact>\n\n</artifact>"]:
        events = feed_in_chunks(text, size)

        assert not any(isinstance(event, ArtifactContent) for event in events)
        assert completed(events)[0].content == ""


def test_closing_tag_tolerates_case_and_space_before_the_bracket(size: int | None) -> None:
    text = "<artifact>\nx\n</ARTIFACT  >after"

    events = feed_in_chunks(text, size)

    assert completed(events)[0].content == "x"
    assert texts(events) == ["after"]


def test_body_lookalikes_of_the_closing_tag_are_content(size: int | None) -> None:
    body = 'if a < b:\n    s = "</artifac" + "</artifacts>" + "</artifact x>"\n<artifact>'
    text = f"<artifact>\n{body}\n</artifact>"

    assert only_artifact(text, size).content == body


def test_unterminated_opening_tag_gives_up_and_the_stream_goes_on(size: int | None) -> None:
    prose = '<artifact title="unclosed quote' + "x" * MAX_TAG_CHARS + " more prose "
    text = prose + '<artifact id="ok">\nfine\n</artifact> end'

    events = feed_in_chunks(text, size)

    assert texts(events) == [prose, " end"]
    assert completed(events)[0].content == "fine"


def test_unterminated_opening_tag_at_the_end_comes_out_as_prose(size: int | None) -> None:
    text = "Look: <artifact title='never closed"

    assert feed_in_chunks(text, size) == [TextChunk(text)]


def test_every_two_piece_split_gives_the_same_events() -> None:
    text = "é <art <artifact id=\"x\" title='t'>\r\n🚀 </arti\n\r\n</artifact >\n<artifact/>!"
    whole = feed_in_chunks(text, None)

    for cut in range(len(text) + 1):
        parser = ArtifactParser()

        events = merged(parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.flush())

        assert events == whole, cut


# What tags are made of, and what sits beside them.
TAG_PIECES = ["<artifact", "</artifact>", "</artifact >", "<artifact/>", "</artifact", "<", "</"]
TAG_PIECES += [' id="x"', " id='y'", " title='t'", ' title="a b"', ' type="code"', ">", "/"]
TAG_PIECES += ['"', "'", "=", "arti", "fact", "\n", "\r\n", " ", "é", "🚀", "&amp;", "```"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TAG_PIECES), max_size=40), st.lists(st.integers(0, 999)))
def test_any_reply_cut_anywhere_gives_the_events_it_gives_whole(
    pieces: list[str], cuts: list[int]
) -> None:
    text = "".join(pieces)

    assert feed_split(ArtifactParser(), text, cuts) == feed_in_chunks(text, None)


def test_a_long_reply_fed_one_character_at_a_time_parses_completely() -> None:
    blocks = [
        f'Prose < {n}.\n<artifact id="c{n}" title="c.py">\nprint("hi") # </art\n</artifact>\n'
        for n in range(1300)
    ]
    text = "".join(blocks)
    parser = ArtifactParser()

    events = merged([event for char in text for event in parser.feed(char)] + parser.flush())

    assert len(text) > 100_000
    assert [a.artifact_id for a in completed(events)] == [f"c{n}" for n in range(1300)]
    assert {a.content for a in completed(events)} == {'print("hi") # </art'}
    assert "".join(texts(events)) == "".join(f"Prose < {n}.\n\n" for n in range(1300))
