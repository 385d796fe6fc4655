"""Local stand-ins for outside systems (a HubSpot-compatible CRM), with fault injection.

The sandbox CRM speaks the parts of HubSpot's CRM v3 contacts API that Cauce uses (batch
upsert, read and archive; single get, patch, delete and create; GDPR delete) and the
batch email subscription statuses of communication preferences v4, with the
limits of a private app (a rolling 10-second window and a daily cap, with HubSpot's 429
bodies and ``X-HubSpot-RateLimit-*`` headers), unique ``idProperty`` semantics, signed
change webhooks, fault injection and an inspection API under ``/_sandbox/``.

Use it in-process (``await start_sandbox_crm(SandboxCrmConfig(...))``), in a thread
(``start_sandbox_crm_in_thread``) or as a process (``cauce sandbox crm``).
"""

from cauce.sandbox.config import FaultSettings, SandboxCrmConfig
from cauce.sandbox.runner import (
    SandboxCrm,
    ThreadedSandboxCrm,
    serve_sandbox_crm,
    start_sandbox_crm,
    start_sandbox_crm_in_thread,
)
from cauce.sandbox.webhooks import WebhookTransport, sign_v3, verify_v3

__all__ = [
    "FaultSettings",
    "SandboxCrm",
    "SandboxCrmConfig",
    "ThreadedSandboxCrm",
    "WebhookTransport",
    "serve_sandbox_crm",
    "sign_v3",
    "start_sandbox_crm",
    "start_sandbox_crm_in_thread",
    "verify_v3",
]
