"""A local HTTPS stand-in for a Service Bus namespace's management endpoint.

It answers the real azure-servicebus SDK with Atom XML feeds and entries shaped like the service's
(QueueDescription / TopicDescription / SubscriptionDescription with CountDetails), pages listings
with `$skip`/`$top` and a `next` link, and checks the SharedAccessSignature the SDK signs with the
key. Like Azure (whose Get Entity and Entities Discovery operations document 401 as their only refusal)
it answers 401 to a missing, malformed, expired or wrongly signed token and to a key without the Manage
right, the latter with the detail "Manage,EntityRead claims required for this operation". Tests can
bend its answers (`mangle`, `endless_next`, `pad_bytes`). Its TLS certificate is made here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, unquote, urlparse
from xml.sax.saxutils import escape

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONNECT_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS_NS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
STAMP = "2026-11-27T10:00:00.0000000Z"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1; the client trusts it as its CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncwatch-test-servicebus")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sb-cert.pem", directory / "sb-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Counts:
    active: int = 0
    dead_letter: int = 0
    scheduled: int = 0
    transfer: int = 0
    transfer_dead_letter: int = 0

    def xml(self) -> str:
        total = self.active + self.dead_letter + self.scheduled + self.transfer + self.transfer_dead_letter
        return (
            f"<MessageCount>{total}</MessageCount>"
            f'<CountDetails xmlns:d2p1="{COUNTS_NS}">'
            f"<d2p1:ActiveMessageCount>{self.active}</d2p1:ActiveMessageCount>"
            f"<d2p1:DeadLetterMessageCount>{self.dead_letter}</d2p1:DeadLetterMessageCount>"
            f"<d2p1:ScheduledMessageCount>{self.scheduled}</d2p1:ScheduledMessageCount>"
            f"<d2p1:TransferMessageCount>{self.transfer}</d2p1:TransferMessageCount>"
            f"<d2p1:TransferDeadLetterMessageCount>{self.transfer_dead_letter}</d2p1:TransferDeadLetterMessageCount>"
            f"</CountDetails>"
        )


def _queue_description(c: Counts) -> str:
    return (
        f'<QueueDescription xmlns="{CONNECT_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<LockDuration>PT1M</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"
        "<RequiresDuplicateDetection>false</RequiresDuplicateDetection><RequiresSession>false</RequiresSession>"
        "<DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration>"
        "<DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow>"
        "<MaxDeliveryCount>10</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations>"
        f"<SizeInBytes>0</SizeInBytes>{c.xml().split('<CountDetails')[0]}"
        "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status>"
        f"<CreatedAt>{STAMP}</CreatedAt><UpdatedAt>{STAMP}</UpdatedAt><AccessedAt>{STAMP}</AccessedAt>"
        f"<SupportOrdering>true</SupportOrdering><CountDetails{c.xml().split('<CountDetails', 1)[1]}"
        "<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>false</EnablePartitioning>"
        "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableExpress>false</EnableExpress>"
        "</QueueDescription>"
    )


def _topic_description(subscriptions: int) -> str:
    return (
        f'<TopicDescription xmlns="{CONNECT_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive>"
        "<MaxSizeInMegabytes>1024</MaxSizeInMegabytes><RequiresDuplicateDetection>false</RequiresDuplicateDetection>"
        "<DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow>"
        "<EnableBatchedOperations>true</EnableBatchedOperations><SizeInBytes>0</SizeInBytes>"
        "<FilteringMessagesBeforePublishing>false</FilteringMessagesBeforePublishing>"
        "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/><Status>Active</Status>"
        f"<CreatedAt>{STAMP}</CreatedAt><UpdatedAt>{STAMP}</UpdatedAt><AccessedAt>{STAMP}</AccessedAt>"
        "<SupportOrdering>true</SupportOrdering>"
        f'<CountDetails xmlns:d2p1="{COUNTS_NS}"><d2p1:ActiveMessageCount>0</d2p1:ActiveMessageCount>'
        "<d2p1:DeadLetterMessageCount>0</d2p1:DeadLetterMessageCount><d2p1:ScheduledMessageCount>0</d2p1:ScheduledMessageCount>"
        "<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>"
        "<d2p1:TransferDeadLetterMessageCount>0</d2p1:TransferDeadLetterMessageCount></CountDetails>"
        "<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle><EnablePartitioning>false</EnablePartitioning>"
        "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus><EnableSubscriptionPartitioning>false</EnableSubscriptionPartitioning>"
        f"<EnableExpress>false</EnableExpress><SubscriptionCount>{subscriptions}</SubscriptionCount>"
        "</TopicDescription>"
    )


def _subscription_description(c: Counts) -> str:
    return (
        f'<SubscriptionDescription xmlns="{CONNECT_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
        "<LockDuration>PT1M</LockDuration><RequiresSession>false</RequiresSession>"
        "<DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration>"
        "<DeadLetteringOnFilterEvaluationExceptions>true</DeadLetteringOnFilterEvaluationExceptions>"
        f"{c.xml().split('<CountDetails')[0]}<MaxDeliveryCount>10</MaxDeliveryCount>"
        "<EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status>"
        f"<CreatedAt>{STAMP}</CreatedAt><UpdatedAt>{STAMP}</UpdatedAt><AccessedAt>{STAMP}</AccessedAt>"
        f"<CountDetails{c.xml().split('<CountDetails', 1)[1]}"
        "<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle>"
        "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus></SubscriptionDescription>"
    )


class FakeServiceBus:
    def __init__(self, workdir: Path, keys: dict[str, tuple[str, set[str]]] | None = None):
        # key name -> (key, rights)
        self.keys = keys or {"RootManageSharedAccessKey": ("c2VjcmV0LWtleQ==", {"Manage", "Listen", "Send"})}
        self.queues: dict[str, Counts] = {}
        self.topics: dict[str, dict[str, Counts]] = {}
        self.delay = 0.0
        self.fail_with: int | None = None  # answer every request with this status (429: throttled)
        self.requests: list[str] = []
        self.mangle = None  # function(XML text of an answer) -> XML text actually sent
        self.endless_next = False  # every listing page links a next page, forever
        self.pad_bytes = 0  # grow every 200 answer by this many bytes of XML comment
        self.cert, keyfile = make_cert(Path(workdir))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, keyfile)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                fake.requests.append(self.path)
                if fake.delay:
                    time.sleep(fake.delay)
                status, body = fake.answer(
                    self.path, self.headers.get("Authorization", ""), self.headers.get("Host", "")
                )
                if status == 200 and fake.mangle is not None:
                    body = fake.mangle(body)
                data = body.encode()
                if status == 200 and fake.pad_bytes:
                    data = data.replace(b"<title", b"<!--" + b"x" * fake.pad_bytes + b"--><title", 1)
                self.send_response(status)
                self.send_header(
                    "Content-Type",
                    "application/atom+xml;type=feed;charset=utf-8"
                    if status == 200
                    else "application/xml; charset=utf-8",
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout tests) is expected, not an error

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def connection_string(self, key_name: str = "RootManageSharedAccessKey", key: str | None = None) -> str:
        key = key if key is not None else self.keys[key_name][0]
        return f"Endpoint=sb://{self.host}/;SharedAccessKeyName={key_name};SharedAccessKey={key}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the service's behaviour ------------------------------------------------------------

    def _authorize(self, header: str) -> str | None:
        """SharedAccessSignature sr=<url-encoded resource>&sig=<b64 hmac>&se=<expiry>&skn=<key name>.
        None when authorized, else the detail of Azure's 401."""
        if not header:
            return "MissingToken: The authorization header was not found."
        if not header.startswith("SharedAccessSignature "):
            return "InvalidAuthorizationToken: The authorization token is malformed."
        fields = dict(p.split("=", 1) for p in header[len("SharedAccessSignature ") :].split("&") if "=" in p)
        name = unquote(fields.get("skn", ""))
        if not fields.get("se", "").isdigit() or int(fields["se"]) < time.time():
            return "ExpiredToken: The token is expired."
        if name not in self.keys:
            return "InvalidSignature: The token has an invalid signature."
        key, rights = self.keys[name]
        to_sign = f"{fields.get('sr', '')}\n{fields.get('se', '')}".encode()
        expected = base64.b64encode(hmac.new(key.encode(), to_sign, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(quote_plus(expected), fields.get("sig", "")) and not hmac.compare_digest(
            expected, unquote(fields.get("sig", ""))
        ):
            return "InvalidSignature: The token has an invalid signature."
        if "Manage" not in rights:
            return "Manage,EntityRead claims required for this operation."
        return None

    def _error(self, status: int, detail: str) -> tuple[int, str]:
        return status, f"<Error><Code>{status}</Code><Detail>{escape(detail)}</Detail></Error>"

    def _entry(self, base: str, title: str, content: str, xml_base: str = "") -> str:
        xb = f' xml:base="{escape(xml_base)}"' if xml_base else ""
        return (
            f"<entry{xb}><id>{escape(base)}/{escape(title)}?api-version=2021-05</id>"
            f'<title type="text">{escape(title)}</title><published>{STAMP}</published><updated>{STAMP}</updated>'
            f'<author><name>fake</name></author><link rel="self" href="../{escape(title)}?api-version=2021-05"/>'
            f'<content type="application/xml">{content}</content></entry>'
        )

    def _feed(self, base: str, path: str, title: str, entries: list[str], skip: int, top: int, total: int) -> str:
        self_href = f"{base}{path}?$skip={skip}&$top={top}&api-version=2021-05"
        links = f'<link rel="self" href="{escape(self_href)}"/>'
        if skip + top < total or self.endless_next:
            links += (
                f'<link rel="next" href="{escape(f"{base}{path}?$skip={skip + top}&$top={top}&api-version=2021-05")}"/>'
            )
        return (
            f'<feed xmlns="http://www.w3.org/2005/Atom"><title type="text">{title}</title>'
            f"<id>{escape(self_href)}</id><updated>{STAMP}</updated>{links}{''.join(entries)}</feed>"
        )

    def answer(self, raw_path: str, auth: str, host: str) -> tuple[int, str]:
        if self.fail_with == 429:
            return self._error(429, "ServerBusy: the request was throttled. Retry after some time.")
        refused = self._authorize(auth)
        if refused is not None:
            return self._error(401, refused)
        url = urlparse(raw_path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        skip, top = int(q.get("$skip", 0)), int(q.get("$top", 100))
        base = f"https://{host}"
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:1] == ["$Resources"] and len(parts) == 2 and parts[1].lower() in ("queues", "topics"):
            if parts[1].lower() == "queues":
                names = sorted(self.queues)
                make = lambda n: _queue_description(self.queues[n])  # noqa: E731 -- a one-line factory reads best inline
            else:
                names = sorted(self.topics)
                make = lambda n: _topic_description(len(self.topics[n]))  # noqa: E731 -- a one-line factory reads best inline
            page = names[skip : skip + top]
            entries = [self._entry(base, n, make(n), xml_base=f"{base}{url.path}?{url.query}") for n in page]
            return 200, self._feed(base, url.path, parts[1].capitalize(), entries, skip, top, len(names))
        if len(parts) == 2 and parts[1].lower() == "subscriptions":
            subs = self.topics.get(parts[0])
            if subs is None:
                return self._error(404, f"Entity '{parts[0]}' was not found.")
            names = sorted(subs)[skip : skip + top]
            entries = [
                self._entry(f"{base}/{parts[0]}/Subscriptions", n, _subscription_description(subs[n])) for n in names
            ]
            return 200, self._feed(base, url.path, "Subscriptions", entries, skip, top, len(subs))
        if len(parts) == 1 and parts[0]:
            if parts[0] in self.queues:
                # A single entity is a standalone Atom entry document.
                doc = self._entry(base, parts[0], _queue_description(self.queues[parts[0]]))
                return 200, doc.replace("<entry", '<entry xmlns="http://www.w3.org/2005/Atom"', 1)
            # The service answers an unknown entity with an empty feed, not a 404.
            return 200, self._feed(base, url.path, "Publicly Listed Services", [], 0, 100, 0)
        return self._error(404, "not found")
