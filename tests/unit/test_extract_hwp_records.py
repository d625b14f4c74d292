"""The HWP 5 record reader on bytes built in the test: headers, nesting, control characters, tables."""

from __future__ import annotations

import struct

import pytest

from services.errors import ExtractionError
from services.ingest.extract._budget import Budget
from services.ingest.extract._types import ExtractLimits
from services.ingest.extract.hwp import (
    FLAG_COMPRESSED,
    FLAG_DISTRIBUTION,
    FLAG_DRM,
    FLAG_PASSWORD,
    build_tree,
    control_id,
    decode_para_text,
    inflate,
    parse_file_header,
    parse_records,
    property_set_title,
    section_text_lines,
)
from tests.extract_samples import (
    TAG_PARA_HEADER,
    TAG_PARA_TEXT,
    _summary_info,
    control,
    deflate_raw,
    para_records,
    record,
    table_records,
)


def budget(**kw) -> Budget:
    return Budget(ExtractLimits(**kw))


def test_record_header_fields_and_extended_size():
    small = record(TAG_PARA_TEXT, 3, b"ab")
    (header,) = struct.unpack("<I", small[:4])
    assert header & 0x3FF == 67 and (header >> 10) & 0x3FF == 3 and header >> 20 == 2
    big_payload = bytes(range(256)) * 20  # 5120 bytes > 4094: size 0xFFF + UINT32
    big = record(TAG_PARA_TEXT, 1, big_payload)
    assert struct.unpack("<I", big[:4])[0] >> 20 == 0xFFF
    recs = parse_records(small + big)
    assert [(r.tag, r.level, len(r.payload)) for r in recs] == [(67, 3, 2), (67, 1, 5120)]
    assert recs[1].payload == big_payload


def test_boundary_size_4095_uses_extended_header():
    payload = b"x" * 0xFFF
    data = record(TAG_PARA_TEXT, 0, payload)
    assert len(data) == 8 + 0xFFF
    assert parse_records(data)[0].payload == payload


def test_truncated_records_raise():
    data = record(TAG_PARA_HEADER, 0, b"\x00" * 12) + record(TAG_PARA_TEXT, 1, b"\x00" * 6000)
    for cut in (data[:2], data[: 16 + 2], data[: 16 + 4 + 2], data[:-1]):  # header, size word, payload
        with pytest.raises(ExtractionError, match="corrupt HWP"):
            parse_records(cut)


def test_decode_plain_text_and_surrogates():
    text = "한글 abc 😀 끝"
    assert decode_para_text((text + "\r").encode("utf-16-le")) == text


def test_decode_control_characters():
    # extended (8 WCHARs): 2 section def, 11 table; inline (8): 9 tab, 4 field end; char (1): 10, 24, 30, 31, 13
    raw = (
        control(2, "secd")
        + "가"
        + control(9)
        + "나"
        + "\n"
        + "다"
        + chr(24)
        + "라"
        + chr(30)
        + "마"
        + chr(31)
        + "바"
        + control(3, "%hlk")
        + "링크"
        + control(4, "%hlk")
        + control(11, "tbl ")
        + "끝\r"
    )
    assert decode_para_text(raw.encode("utf-16-le")) == "가\t나\n다-라 마 바링크 끝"


def test_decode_control_data_is_never_text():
    # The 6 data WCHARs of an extended control may hold anything, including values < 32 and CJK.
    weird = chr(11) + "\x0d\x0a\u4e00\u4e8c\x01\x02" + chr(11)
    assert decode_para_text(("앞" + weird + "뒤\r").encode("utf-16-le")) == "앞 뒤"


def test_decode_odd_length_and_cut_control():
    assert decode_para_text("가나".encode("utf-16-le") + b"\x00") == "가나"
    assert decode_para_text(("가" + chr(11) + "ab").encode("utf-16-le")) == "가 "


def test_tree_by_level_and_control_id():
    data = para_records("문단") + table_records([["a", "b"]])
    root = build_tree(parse_records(data), 256)
    assert [c.tag for c in root.children] == [TAG_PARA_HEADER, TAG_PARA_HEADER]
    table_para = root.children[1]
    ctrl = next(c for c in table_para.children if c.tag == 71)
    assert control_id(ctrl) == "tbl "


def test_tree_depth_limit():
    data = b"".join(record(TAG_PARA_HEADER, level, b"") for level in range(20))
    with pytest.raises(ExtractionError, match="nested deeper"):
        build_tree(parse_records(data), 10)


def test_section_lines_with_tables_nested_tables_and_caption_order():
    nested = table_records([["안1", "안2"]], level=2)
    data = (
        para_records("첫 문단") + table_records([["이름", "값"], ["서울", "1"]], before="표:") + para_records("마지막")
    )
    lines = section_text_lines(data, budget())
    assert lines == ["첫 문단", "표:", "이름 | 값", "서울 | 1", "마지막"]
    # A table inside a cell is flattened into that cell.
    from tests.extract_samples import TAG_CTRL_HEADER, TAG_LIST_HEADER, TAG_TABLE

    inner = record(TAG_CTRL_HEADER, 1, b" lbt") + record(TAG_TABLE, 2, struct.pack("<IHH", 0, 1, 2))
    inner += record(TAG_LIST_HEADER, 2, struct.pack("<HHIHH", 1, 0, 0, 0, 0) + b"\x00" * 26)
    inner += para_records("바깥", 2)
    inner += record(TAG_LIST_HEADER, 2, struct.pack("<HHIHH", 1, 0, 0, 1, 0) + b"\x00" * 26)
    inner += nested
    outer = para_records(control(11, "tbl "), 0, inner)
    assert section_text_lines(outer, budget()) == ["바깥 | 안1 | 안2"]


def test_cells_ordered_by_row_and_column_address():
    from tests.extract_samples import TAG_CTRL_HEADER, TAG_LIST_HEADER, TAG_TABLE

    inner = record(TAG_CTRL_HEADER, 1, b" lbt") + record(TAG_TABLE, 2, struct.pack("<IHH", 0, 2, 2))
    for col, row, text in [(1, 1, "라"), (0, 0, "가"), (0, 1, "다"), (1, 0, "나")]:
        inner += record(TAG_LIST_HEADER, 2, struct.pack("<HHIHH", 1, 0, 0, col, row) + b"\x00" * 26)
        inner += para_records(text, 2)
    assert section_text_lines(para_records(control(11, "tbl "), 0, inner), budget()) == ["가 | 나", "다 | 라"]


def test_hidden_comment_skipped_footnote_kept():
    from tests.extract_samples import TAG_CTRL_HEADER, TAG_LIST_HEADER

    comment = record(TAG_CTRL_HEADER, 1, b"tmct") + record(TAG_LIST_HEADER, 2, b"\x00" * 8) + para_records("숨김", 2)
    footnote = record(TAG_CTRL_HEADER, 1, b"  nf") + record(TAG_LIST_HEADER, 2, b"\x00" * 8) + para_records("각주", 2)
    data = para_records("본문" + control(15, "tcmt") + control(17, "fn  "), 0, comment + footnote)
    assert section_text_lines(data, budget()) == ["본문", "각주"]


def _header(flags: int, version: int = 0x05000300) -> bytes:
    return (b"HWP Document File".ljust(32, b"\x00") + struct.pack("<II", version, flags)).ljust(256, b"\x00")


def test_file_header_flags():
    fh = parse_file_header(_header(FLAG_COMPRESSED))
    assert fh.compressed and fh.version == (5, 0, 3, 0)
    assert not parse_file_header(_header(0)).compressed
    with pytest.raises(ExtractionError, match="password"):
        parse_file_header(_header(FLAG_COMPRESSED | FLAG_PASSWORD))
    with pytest.raises(ExtractionError, match="DRM"):
        parse_file_header(_header(FLAG_DRM))
    with pytest.raises(ExtractionError, match="DRM"):
        parse_file_header(_header(1 << 10))
    with pytest.raises(ExtractionError, match="certificate"):
        parse_file_header(_header(1 << 8))
    assert parse_file_header(_header(FLAG_COMPRESSED | FLAG_DISTRIBUTION)).distribution  # read, not refused
    with pytest.raises(ExtractionError, match="version 3"):
        parse_file_header(_header(0, version=0x03000000))
    with pytest.raises(ExtractionError, match="signature"):
        parse_file_header(b"HWP Document File")


def test_inflate_bounded():
    data = "본문".encode("utf-16-le") * 1000
    assert inflate(deflate_raw(data), budget(), "Section0") == data
    bomb = deflate_raw(b"\x00" * (40 * 2**20))
    with pytest.raises(ExtractionError, match="bomb"):
        inflate(bomb, budget(), "Section0")
    with pytest.raises(ExtractionError, match="beyond the limit"):
        inflate(bomb, budget(max_uncompressed_bytes=2**20, max_compression_ratio=1e9), "Section0")
    with pytest.raises(ExtractionError, match="truncated"):
        inflate(deflate_raw(data)[:-10], budget(), "Section0")
    with pytest.raises(ExtractionError, match="corrupt"):
        inflate(b"\xff" * 100, budget(), "Section0")


def test_summary_title():
    assert property_set_title(_summary_info("보고서 제목")) == "보고서 제목"
    assert property_set_title(b"\xfe\xff" + b"\x00" * 10) is None
