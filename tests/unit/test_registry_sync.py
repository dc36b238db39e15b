"""registry-sync without a cluster: reading ServiceLists, paging, the service account, and API outages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from functions.registry import service
from functions.registry.kubernetes import KnativeServiceLister, knative_services
from functions.registry.model import KnativeService, SyncReport
from functions.shared.errors import Unavailable
from functions.shared.problems import from_domain
from functions.shared.service_client import UpstreamUnavailable


def item(name: Any, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name}, "status": status}


def test_a_service_list_page() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    not_ready = [{"type": "ConfigurationsReady", "status": "True"}, {"type": "Ready", "status": "False"}]
    document = {
        "items": [
            item("product-get", url="http://product-get.shop.svc.cluster.local", conditions=ready),
            item("order-place", conditions=not_ready),
            item("gateway", url="ftp://nonsense"),
            item("Not_A_Name"),
            item(None),
            {"metadata": {"name": "leaving", "deletionTimestamp": "2026-11-24T12:00:00Z"}},
        ]
    }
    assert knative_services(document, "shop") == [
        KnativeService("product-get", "shop", "http://product-get.shop.svc.cluster.local", True),
        KnativeService("order-place", "shop", None, False),
        KnativeService("gateway", "shop", None, None),
    ]


@dataclass
class FakeResponse:
    status: int
    data: bytes


@dataclass
class FakePool:
    answers: list[FakeResponse | Exception]
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def request(self, method: str, url: str, headers: dict[str, str], timeout: Any) -> FakeResponse:
        self.calls.append((url, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def lister(tmp_path: Path, *answers: FakeResponse | Exception, token: str | None = None) -> KnativeServiceLister:
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
    result = KnativeServiceLister("https://kubernetes.default.svc/", "shop", account_dir=tmp_path)
    result.pool = FakePool(list(answers))  # type: ignore[assignment]
    return result


def page(*names: str, more: str | None = None) -> FakeResponse:
    metadata = {"continue": more} if more else {"resourceVersion": "1"}
    return FakeResponse(
        200, json.dumps({"kind": "ServiceList", "metadata": metadata, "items": [item(n) for n in names]}).encode()
    )


def test_pages_are_followed_with_the_service_account_token(tmp_path: Path) -> None:
    listing = lister(tmp_path, page("a", "b", more="next/page"), page("c"), token="s3cr3t")
    assert [s.name for s in listing()] == ["a", "b", "c"]
    calls = listing.pool.calls  # type: ignore[attr-defined]
    assert (
        calls[0][0] == "https://kubernetes.default.svc/apis/serving.knative.dev/v1/namespaces/shop/services?limit=500"
    )
    assert calls[1][0].endswith("?limit=500&continue=next/page")
    assert all(headers["Authorization"] == "Bearer s3cr3t" for _, headers in calls)


def test_without_a_token_file_no_authorization_is_sent(tmp_path: Path) -> None:
    listing = lister(tmp_path, page("a"))
    listing()
    assert "Authorization" not in listing.pool.calls[0][1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [
        FakeResponse(403, b'{"kind": "Status", "reason": "Forbidden"}'),
        FakeResponse(200, b"<html>"),
        FakeResponse(200, b'{"kind": "Status"}'),
        urllib3.exceptions.NewConnectionError(None, "connection refused"),  # type: ignore[arg-type]
    ],
    ids=["forbidden", "not-json", "not-a-list", "unreachable"],
)
def test_an_unusable_answer_is_an_unavailable_api(tmp_path: Path, answer: FakeResponse | Exception) -> None:
    with pytest.raises(UpstreamUnavailable):
        lister(tmp_path, answer)()


@dataclass
class RecordingRegistry:
    synced: list[tuple[str, Sequence[KnativeService]]] = field(default_factory=list)

    def sync_knative(
        self, namespace: str, services: Sequence[KnativeService], now_ms: int, lease_seconds: int
    ) -> SyncReport:
        self.synced.append((namespace, services))
        return SyncReport(len(services), 0, 0, 0)


def test_an_api_outage_leaves_the_registry_alone_and_answers_503() -> None:
    registry = RecordingRegistry()

    def unavailable() -> list[KnativeService]:
        raise UpstreamUnavailable("kubernetes", "answered 500")

    with pytest.raises(Unavailable) as raised:
        service.sync_knative_services(
            "shop",
            services=unavailable,
            registry=registry,
            clock=lambda: 0,
            lease_seconds=90,  # type: ignore[arg-type]
        )
    assert from_domain(raised.value).status == 503 and "answered 500" in raised.value.detail
    assert registry.synced == []


def test_only_the_namespace_s_services_are_synced() -> None:
    registry = RecordingRegistry()
    listed = [KnativeService("a", "shop"), KnativeService("b", "elsewhere")]
    report = service.sync_knative_services(
        "shop",
        services=lambda: listed,
        registry=registry,
        clock=lambda: 0,
        lease_seconds=90,  # type: ignore[arg-type]
    )
    assert report.added == 1 and registry.synced == [("shop", [KnativeService("a", "shop")])]
