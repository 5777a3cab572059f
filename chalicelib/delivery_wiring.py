"""Wiring of the result-delivery adapters (called by bootstrap.build; nothing touches AWS until first use)."""

from __future__ import annotations

from chalicelib.adapters.connections_apigw import ApiGatewayConnections, NoConnections
from chalicelib.adapters.devices_dynamodb import DynamoDeviceRegistry
from chalicelib.adapters.inbox_dynamodb import DynamoInbox
from chalicelib.adapters.job_events_dynamodb import DynamoJobEvents
from chalicelib.adapters.webhook_http import HttpWebhookSender, SocketResolver
from chalicelib.adapters.webhook_queue_sqs import SqsWebhookQueue
from chalicelib.adapters.webhooks_dynamodb import DynamoWebhookStore
from chalicelib.config import Settings
from chalicelib.services.delivery_ports import Connections, DeliveryPorts


def delivery_ports(settings: Settings) -> DeliveryPorts:
    """The delivery ports on the stage's delivery table, webhook queue and WebSocket endpoint."""
    table = settings.table("delivery")
    connections: Connections = (
        ApiGatewayConnections(settings.ws_management_url) if settings.ws_management_url else NoConnections()
    )
    return DeliveryPorts(
        job_events=DynamoJobEvents(settings.table("jobs"), table),
        inbox=DynamoInbox(table),
        devices=DynamoDeviceRegistry(table),
        webhooks=DynamoWebhookStore(table),
        connections=connections,
        webhook_queue=SqsWebhookQueue(settings.webhook_queue()),
        resolver=SocketResolver(),
        sender=HttpWebhookSender(),
    )
