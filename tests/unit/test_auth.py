"""Keys' scopes and collection patterns, and the in-process limits (services/auth)."""

from __future__ import annotations

import pytest

from services.auth.keys import hash_key, validate_patterns
from services.auth.limits import LocalLimits, retry_after
from services.auth.models import Scope
from services.auth.principal import ANONYMOUS, Forbidden, Principal
from services.errors import InvalidInput, NotFound


def test_patterns_match_whole_names_case_sensitively():
    p = Principal(name="k", scope=Scope.read, collections=("hr", "wiki-*"))
    assert p.sees("hr") and p.sees("wiki-ko") and p.sees("wiki-")
    assert not p.sees("hr2") and not p.sees("HR") and not p.sees("wiki") and not p.sees("x-wiki-ko")
    assert p.visible(["a", "hr", "wiki-en"]) == ["hr", "wiki-en"]
    assert ANONYMOUS.sees("anything") and ANONYMOUS.all_collections and not p.all_collections


def test_a_collection_the_key_may_not_see_is_not_found_before_its_scope_is_checked():
    p = Principal(name="k", scope=Scope.read, collections=("a",))
    with pytest.raises(NotFound) as e:
        p.require(Scope.admin, ["a", "b"])
    assert e.value.code == "collection_not_found" and e.value.message == "collection 'b' does not exist"
    with pytest.raises(Forbidden) as f:
        p.require(Scope.write, ["a"])
    assert f.value.http_status == 403 and "needs write" in f.value.message
    p.require(Scope.read, ["a"])


def test_scopes_include_the_smaller_ones():
    assert Scope.admin.includes(Scope.write) and Scope.write.includes(Scope.read)
    assert not Scope.read.includes(Scope.write) and not Scope.write.includes(Scope.admin)


def test_the_metrics_token_opens_nothing_else():
    p = Principal(name="m", scope=Scope.read, collections=(), metrics_only=True)
    assert not p.can(Scope.read) and not p.sees("a")


def test_patterns_are_validated():
    assert validate_patterns([" hr ", "hr", "wiki-*"]) == ["hr", "wiki-*"]
    for bad in ([], [" "], ["a b"], ["a/b"], ["x" * 129]):
        with pytest.raises(InvalidInput):
            validate_patterns(bad)


def test_keys_are_stored_as_sha256():
    import hashlib

    assert hash_key("sk_abc") == hashlib.sha256(b"sk_abc").hexdigest()
    assert hash_key("sk_abc") != hash_key("sk_abd")


def test_a_token_bucket_holds_one_second_of_requests(monkeypatch):
    import services.auth.limits as limits

    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    bucket = LocalLimits()
    assert [bucket.take_request("k", 3) for _ in range(3)] == [None, None, None]
    wait = bucket.take_request("k", 3)
    assert wait == pytest.approx(1 / 3)
    assert bucket.take_request("other", 3) is None  # per key
    now[0] += 1 / 3
    assert bucket.take_request("k", 3) is None
    assert bucket.take_request("slow", 0.5) is None and bucket.take_request("slow", 0.5) == pytest.approx(2.0)
    assert retry_after(0.01) == 1 and retry_after(2.2) == 3


def test_upload_bytes_per_day():
    limits = LocalLimits()
    assert limits.take_upload("k", 60, 100) is None
    assert limits.upload_room("k", 100)[0] == 40
    wait = limits.take_upload("k", 41, 100)
    assert wait is not None and 1 <= wait <= 86400
    assert limits.take_upload("k", 40, 100) is None  # a refused upload was not counted
