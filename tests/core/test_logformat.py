import pytest

from flowexport.core.fields import FIELDS, FIELDS_BY_NAME, KEY_FIELDS
from flowexport.core.logformat import (
    DEFAULT_V2_FORMAT,
    PIPELINE_FORMAT,
    LogFormat,
    LogFormatError,
)


def test_parses_custom_format_in_its_own_order() -> None:
    fmt = LogFormat.parse("${dstport} ${srcaddr} ${protocol} ${dstaddr} ${srcport}")
    assert fmt.fields == ("dstport", "srcaddr", "protocol", "dstaddr", "srcport")
    assert fmt.index["srcaddr"] == 1


def test_header_line_of_field_names_is_a_format() -> None:
    fmt = LogFormat.parse(" ".join(DEFAULT_V2_FORMAT.fields))
    assert fmt == DEFAULT_V2_FORMAT


def test_render_round_trips() -> None:
    assert LogFormat.parse(PIPELINE_FORMAT.render()) == PIPELINE_FORMAT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${nope}", "unknown"),
        ("${srcaddr} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol}", "repeated"),
        ("${srcaddr} ${dstaddr} ${srcport} ${protocol}", "dstport"),
        ("${srcaddr} $dstaddr ${srcport} ${dstport} ${protocol}", "$dstaddr"),
    ],
)
def test_bad_formats_say_why(text: str, message: str) -> None:
    with pytest.raises(LogFormatError, match=message.replace("$", r"\$")):
        LogFormat.parse(text)


def test_version_is_highest_field_version() -> None:
    assert DEFAULT_V2_FORMAT.version == 2
    assert PIPELINE_FORMAT.version == 5
    every = LogFormat(tuple(f.name for f in FIELDS))
    assert every.version == 8


def test_field_table_covers_every_documented_version() -> None:
    by_version: dict[int, int] = {}
    for spec in FIELDS:
        by_version[spec.version] = by_version.get(spec.version, 0) + 1
    assert by_version == {2: 14, 3: 7, 4: 4, 5: 4, 6: 18, 7: 10, 8: 1}
    assert FIELDS_BY_NAME["reject-reason"].version == 8


def test_pipeline_format_carries_every_v2_field_with_the_key_fields_first() -> None:
    assert set(DEFAULT_V2_FORMAT.fields) <= set(PIPELINE_FORMAT.fields)
    assert PIPELINE_FORMAT.fields[: len(KEY_FIELDS)] == KEY_FIELDS
    for needed in ("tcp-flags", "pkt-srcaddr", "pkt-dstaddr", "action", "log-status"):
        assert needed in PIPELINE_FORMAT


def test_a_format_built_directly_is_validated_too() -> None:
    with pytest.raises(LogFormatError, match="lacks"):
        LogFormat(("srcaddr",))
    with pytest.raises(LogFormatError, match="unknown"):
        LogFormat((*DEFAULT_V2_FORMAT.fields, "nope"))
