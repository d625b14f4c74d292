"""The console's files, without a browser: every interface text in both languages, nothing loaded
from another host, the vendored library as recorded."""

from __future__ import annotations

import hashlib
import re

from services.console.routes import STATIC_DIR

TEMPLATE = STATIC_DIR.parent / "templates" / "console.html"
OWN_SCRIPTS = sorted(STATIC_DIR.glob("*.js"))
VENDOR = STATIC_DIR / "vendor" / "alpinejs"


def _messages() -> dict[str, set[str]]:
    source = (STATIC_DIR / "i18n.js").read_text()
    ko, en = source.split("\n  en: {", 1)
    key = re.compile(r"^\s+(\w+):", re.M)
    return {"ko": set(key.findall(ko.split("\n  ko: {", 1)[1])), "en": set(key.findall(en))}


def _used_keys() -> set[str]:
    text = TEMPLATE.read_text() + "".join(p.read_text() for p in OWN_SCRIPTS)
    literal = set(re.findall(r"\bt\(\s*['\"](\w+)['\"]\s*[,)]", text))
    # Keys built from a prefix and a value: every value the code can give.
    prefixed = {
        "nav_": ["collections", "upload", "documents", "search", "evaluation"],
        "st_": ["ready", "uploading", "rejected", "queued", "processing", "indexed", "failed"],
        "stage_": ["extracting", "chunking", "embedding", "done"],
        "ready_": ["ready", "loading", "down", "unknown"],
        "tab_": ["results", "explain", "context"],
    }
    for prefix, values in prefixed.items():
        assert f"'{prefix}' +" in text or f"`{prefix}$" in text, prefix
        literal |= {prefix + v for v in values}
    return literal


def test_every_interface_text_exists_in_korean_and_english():
    messages = _messages()
    used = _used_keys()
    assert len(used) > 100
    assert used <= messages["ko"], sorted(used - messages["ko"])
    assert used <= messages["en"], sorted(used - messages["en"])
    assert messages["ko"] == messages["en"], sorted(messages["ko"] ^ messages["en"])


def test_the_page_and_its_scripts_name_no_other_host():
    for path in [TEMPLATE, STATIC_DIR / "console.css", *OWN_SCRIPTS]:
        text = path.read_text()
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text):
            raise AssertionError(f"{path.name} refers to {url}: the console must work offline")
        assert "@import" not in text and "fonts.googleapis" not in text


def test_vendored_alpine_is_the_recorded_release_with_its_licences():
    readme = (VENDOR / "README.md").read_text()
    digest = hashlib.sha256((VENDOR / "alpine.esm.min.js").read_bytes()).hexdigest()
    assert digest in readme and "3.17.5" in readme
    assert "MIT License" in (VENDOR / "LICENSE.md").read_text()
    assert "Evan" in (VENDOR / "LICENSE-vue.md").read_text()
    assert 'from "./vendor/alpinejs/alpine.esm.min.js"' in (STATIC_DIR / "app.js").read_text()
