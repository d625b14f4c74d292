"""XML parsed with defusedxml (no DTDs, no entity expansion, no external references) and a depth limit."""

from __future__ import annotations

import io
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import iterparse

from services.errors import ExtractionError

from ._budget import Budget


def parse_xml(data: bytes, budget: Budget, what: str) -> Element:
    """Parse XML safely; refuse DTDs/entities and elements nested deeper than limits.max_xml_depth."""
    max_depth = budget.limits.max_xml_depth
    depth = 0
    root: Element | None = None
    count = 0
    try:
        for event, elem in iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                if root is None:
                    root = elem
                if depth > max_depth:
                    raise ExtractionError(f"{what}: XML nested deeper than {max_depth} levels")
            else:
                depth -= 1
            count += 1
            if count % 8192 == 0:
                budget.check_time()
    except DTDForbidden:
        raise ExtractionError(f"{what}: XML with a document type declaration (DTD) is refused") from None
    except EntitiesForbidden:
        raise ExtractionError(f"{what}: XML entity declarations are refused (entity expansion attack)") from None
    except ExternalReferenceForbidden:
        raise ExtractionError(f"{what}: XML external references are refused") from None
    except DefusedXmlException:
        raise ExtractionError(f"{what}: unsafe XML refused") from None
    except ParseError as exc:
        raise ExtractionError(f"{what}: malformed XML ({exc})") from None
    if root is None:
        raise ExtractionError(f"{what}: empty XML")
    return root


def local(tag: object) -> str:
    """Local name of an ElementTree tag ('{ns}name' → 'name'); '' for comments and processing instructions."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]
