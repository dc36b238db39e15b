"""A small NetworkPolicy evaluator: does a set of policies let one endpoint open a connection to another?

It follows the semantics of networking.k8s.io/v1 NetworkPolicy:
- a pod is isolated for ingress (egress) once any policy of its namespace selects it and lists
  Ingress (Egress) in policyTypes (policyTypes defaults to Ingress, plus Egress when the policy
  has egress rules); an isolated pod accepts (sends) only what some selecting policy's rules allow;
- a connection needs both sides: the source's egress and the destination's ingress;
- a rule's peers: podSelector alone means pods of the policy's namespace, namespaceSelector alone
  every pod of the matching namespaces, both together the matching pods of the matching
  namespaces, ipBlock an address range; no peers (or no `to`/`from`) means everyone, no ports
  every port; a named port is looked up among the destination's container ports;
- label selectors with matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist).

Endpoints outside the cluster (`namespace=None`) are governed by no policy and match only
ipBlocks. Pods match ipBlocks too, by their IP, as most network plugins do: the evaluator takes
the more permissive reading, so a flow it calls forbidden is forbidden on any plugin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Policy = Mapping[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, named container ports) or an address outside the cluster."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches a label set; an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator!r}")
    return True


class Evaluator:
    """The verdict of a set of NetworkPolicies on connections between endpoints."""

    def __init__(self, policies: Iterable[Policy], namespace_labels: Mapping[str, Mapping[str, str]]) -> None:
        self.policies = [p for p in policies if p.get("kind") == "NetworkPolicy"]
        self.namespace_labels = namespace_labels

    def allows(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Whether `source` may open a `protocol` connection to `destination` on `port`."""
        return self._direction_allows("Egress", source, destination, destination, port, protocol) and (
            self._direction_allows("Ingress", destination, source, destination, port, protocol)
        )

    def isolated(self, pod: Endpoint, direction: str) -> bool:
        return bool(self._selecting(pod, direction))

    def _selecting(self, pod: Endpoint, direction: str) -> list[Policy]:
        if pod.namespace is None:
            return []
        return [
            policy
            for policy in self.policies
            if policy["metadata"].get("namespace", "default") == pod.namespace
            and direction in _policy_types(policy)
            and selects(policy["spec"].get("podSelector"), pod.labels)
        ]

    def _direction_allows(
        self, direction: str, pod: Endpoint, peer: Endpoint, destination: Endpoint, port: int, protocol: str
    ) -> bool:
        selecting = self._selecting(pod, direction)
        if not selecting:
            return True  # not isolated in this direction
        rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        for policy in selecting:
            namespace = policy["metadata"].get("namespace", "default")
            for rule in policy["spec"].get(rules_key) or []:
                if self._peers_match(rule.get(peers_key), namespace, peer) and _ports_match(
                    rule.get("ports"), destination, port, protocol
                ):
                    return True
        return False

    def _peers_match(self, peers: Sequence[Mapping[str, Any]] | None, namespace: str, endpoint: Endpoint) -> bool:
        if not peers:
            return True
        return any(self._peer_matches(peer, namespace, endpoint) for peer in peers)

    def _peer_matches(self, peer: Mapping[str, Any], namespace: str, endpoint: Endpoint) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            address = ipaddress.ip_address(endpoint.ip)
            if address not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(address in ipaddress.ip_network(excluded) for excluded in block.get("except") or [])
        if endpoint.namespace is None:
            return False  # pod and namespace selectors name pods only
        if "namespaceSelector" in peer:
            labels = self.namespace_labels.get(endpoint.namespace, {})
            if not selects(peer["namespaceSelector"], labels):
                return False
        elif endpoint.namespace != namespace:
            return False  # a podSelector alone names pods of the policy's own namespace
        return "podSelector" not in peer or selects(peer["podSelector"], endpoint.labels)


def _policy_types(policy: Policy) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _ports_match(ports: Sequence[Mapping[str, Any]] | None, destination: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True  # every port of this protocol
        if isinstance(wanted, str):
            wanted = destination.ports.get(wanted)
            if wanted is None:
                continue
        if wanted <= port <= entry.get("endPort", wanted):
            return True
    return False
