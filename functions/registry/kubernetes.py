"""Lists Knative Services from the Kubernetes API, as registry-sync's service account may.

In a pod the API is https://kubernetes.default.svc, trusted through the service account's
CA bundle and called with its token (re-read on every call: projected tokens rotate).
Locally KUBERNETES_API_URL points at the runtime's stand-in, which needs neither.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3

from functions.registry.model import KnativeService
from functions.shared.service_client import UpstreamUnavailable

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PAGE_SIZE = 500
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
log = logging.getLogger("shop.registry")


class KnativeServiceLister:
    """GET {api}/apis/serving.knative.dev/v1/namespaces/{namespace}/services, page by page."""

    def __init__(
        self,
        api_url: str,
        namespace: str,
        *,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
        timeout: float = 10.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.namespace = namespace
        self.token_file = account_dir / "token"
        self.timeout = timeout
        ca_file = account_dir / "ca.crt"
        self.pool = urllib3.PoolManager(
            num_pools=2, retries=False, ca_certs=str(ca_file) if ca_file.is_file() else None
        )

    def __call__(self) -> list[KnativeService]:
        services: list[KnativeService] = []
        page: str | None = None
        path = f"/apis/serving.knative.dev/v1/namespaces/{quote(self.namespace)}/services"
        while True:
            query = f"?limit={PAGE_SIZE}" + (f"&continue={quote(page)}" if page else "")
            document = self._get(path + query)
            services += knative_services(document, self.namespace)
            page = (document.get("metadata") or {}).get("continue") or None
            if page is None:
                return services

    def _get(self, path: str) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.token_file.is_file():
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        try:
            response = self.pool.request(
                "GET", self.api_url + path, headers=headers, timeout=urllib3.Timeout(total=self.timeout)
            )
        except urllib3.exceptions.HTTPError as error:
            raise UpstreamUnavailable("kubernetes", f"{type(error).__name__}: {error}") from None
        if response.status != 200:
            detail = response.data[:300].decode(errors="replace")
            raise UpstreamUnavailable("kubernetes", f"{path} answered {response.status}: {detail}")
        try:
            document = json.loads(response.data)
        except ValueError:
            raise UpstreamUnavailable("kubernetes", f"{path} answered something that is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise UpstreamUnavailable("kubernetes", f"{path} answered JSON that is not a list of services")
        return document


def knative_services(document: Mapping[str, Any], namespace: str) -> list[KnativeService]:
    """The services of one ServiceList page; ones being deleted are already gone for the registry."""
    found = []
    for item in document.get("items") or []:
        metadata = item.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not DNS_1035.match(name):
            log.warning("skipping a Knative Service without a valid name: %r", name)
            continue
        if metadata.get("deletionTimestamp"):
            continue
        status = item.get("status") or {}
        url = status.get("url")
        found.append(
            KnativeService(
                name=name,
                namespace=str(metadata.get("namespace") or namespace),
                url=url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
                ready=_ready(status.get("conditions")),
            )
        )
    return found


def _ready(conditions: Any) -> bool | None:
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return {"True": True, "False": False}.get(str(condition.get("status")))
    return None
