"""Knative Eventing on a laptop, from eventing/: the Kafka-backed Broker, Triggers, KafkaSource and PingSources.

    broker.py     the Broker ingress, Trigger and source dispatch, PingSources (Eventing)
    consumers.py  a consumer group member in its thread (ConsumerLoop)
    delivery.py   POST with retries and backoff, then the dead-letter sink
    flow.py       the live event flow: the last events and how each Trigger's delivery went (/_local/events)
    replay.py     what the in-memory broker held is sent again after it restarts
    journal.py    what the Broker ingress took, kept for that replay

The topology itself (Broker, Trigger, ... as read from the manifests) is in local.manifests.
"""

from local.eventing.broker import BROKER_PATH_PREFIX, Eventing
from local.eventing.consumers import ConsumerLoop
from local.eventing.flow import EventFlow
from local.eventing.journal import BrokerJournal
from local.manifests import BROKER_INGRESS_HOST

__all__ = ["BROKER_INGRESS_HOST", "BROKER_PATH_PREFIX", "BrokerJournal", "ConsumerLoop", "EventFlow", "Eventing"]
