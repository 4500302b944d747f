"""Issue 14: the run queue off Azure (`kqlwatch dispatch`, `kqlwatch worker`, `kqlwatch status`): a QueueClient
on KQLWATCH_QUEUE_CONNECTION, encoding as the Functions queue trigger does (base64 text). Not deployed: in Azure
the Functions host itself reads and writes the queue (the bindings), so the Function needs no queue SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient


def queue_client(connection: str, name: str, *, retry_total: int = 3) -> QueueClient:
    """A connection string (Azurite's), or a queue service URL used with the identity (DefaultAzureCredential,
    AZURE_CLIENT_ID: a VM's or container's managed identity)."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    from shared.runtime import redact

    redact.install()  # azure-core's transport logs print request URLs
    options: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        "retry_total": retry_total,
        "connection_timeout": 10,
        "read_timeout": 30,
    }
    if connection.startswith(("https://", "http://")):
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        return QueueClient(account_url=connection.rstrip("/"), queue_name=name, credential=credential, **options)
    return QueueClient.from_connection_string(connection, queue_name=name, **options)


def ensure_queue(client: QueueClient) -> None:
    """Create the queue if absent (Azurite). In Azure the infra pre-creates both queues and the identity has no
    right to create one (403): that is fine, as long as they exist."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise


def depth(client: QueueClient) -> int | None:
    """The approximate message count (one call), or None when the queue cannot be read."""
    from azure.core.exceptions import AzureError

    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except AzureError:
        return None
