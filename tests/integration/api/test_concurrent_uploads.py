"""Uploads that race each other, through the API on SQLite and PostgreSQL: the database's unique
constraints decide, and the losers get the winner's document (no duplicate, no false 409)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import unique_collection, wait_for_status

PARALLEL = 16


def race(calls) -> list:
    """Run `calls` at once (a barrier releases every thread together); their responses."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def documents(client, col: str) -> list[dict]:
    return client.get(f"/v1/collections/{col}/documents", params={"limit": 100}).json()["items"]


def test_identical_uploads_without_external_id_make_one_document(app_client):
    col = unique_collection()
    app_client.post(f"/v1/collections/{col}/documents", json={"text": "준비 문서입니다."})  # the collection exists
    for trial in range(3):
        text = f"같은 본문을 동시에 {trial}번째로 올린다. 중복 문서가 생기면 안 된다."
        answers = race(
            [lambda text=text: app_client.post(f"/v1/collections/{col}/documents", json={"text": text})] * PARALLEL
        )
        assert sorted(r.status_code for r in answers) == [200] * (PARALLEL - 1) + [202], [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
    assert len(documents(app_client, col)) == 4
    wait_for_status(app_client, col, answers[0].json()["id"])


def test_concurrent_first_uploads_create_the_collection_once(app_client):
    for _ in range(3):
        col = unique_collection("new")
        answers = race(
            [
                (
                    lambda i=i, col=col: app_client.post(
                        f"/v1/collections/{col}/documents", json={"text": f"새 컬렉션 문서 {i}"}
                    )
                )
                for i in range(8)
            ]
        )
        assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
        assert len(documents(app_client, col)) == 8
        names = [c["name"] for c in app_client.get("/v1/collections").json()["items"]]
        assert names.count(col) == 1


def test_concurrent_uploads_of_one_external_id_become_generations(app_client):
    col = unique_collection()
    app_client.post(f"/v1/collections/{col}/documents", json={"text": "준비"})
    answers = race(
        [
            (
                lambda i=i: app_client.post(
                    f"/v1/collections/{col}/documents", json={"text": f"판 {i}의 본문", "external_id": "same"}
                )
            )
            for i in range(8)
        ]
    )
    assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sorted(r.json()["generation"] for r in answers) == list(range(1, 9))
