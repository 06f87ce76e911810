"""The redaction corpus of issue 11, end to end: every case is sent as an OTLP log to a real
sidecar (HTTP, protobuf), read back through `GET /api/v1/transactions/{id}` with the token, and
no secret may be visible there, in the raw answer or in any string of it once unescaped (JSON
documents inside strings decoded too). Both snapshot backends: SQLite, and S3 on moto_server.
The answer carries the body's keyed hash, never its plain SHA-256 (a redacted CVV, say, could
be recovered from that by trying all 1,000 values)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from moto_launcher import MotoServer, make_bucket
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from otlp_raw import post
from sidecar import Sidecar
from snapshot_data import make_request

from syncwatch.snapshots import body_bytes

TOKEN = "corpus-token-0123456789"
VISA = "4111111111111111"
VISA_GROUPS = ["4111", "1111", "1111", "1111"]


def _worst_case_digits() -> str:
    # 4 KiB of `1 1 1 …` (the payload that took 10.8 s when card detection was cubic), with a
    # card number in the middle.
    half = ("1 " * 1024)[:2000]
    return json.dumps({"note": half + " x " + " ".join(VISA_GROUPS) + " x " + half})


# (id, body, secrets): bodies are str unless noted (a dict is sent as an OTLP key-value map, bytes as bytes).
CORPUS = [
    (
        "json-in-string",
        json.dumps(
            {
                "event": "order",
                "body": json.dumps(
                    {"password": "hunter2-a", "api_key": "ak-3391", "Authorization": "Bearer eyJhbGciOi.x1"}
                ),
            }
        ),
        ["hunter2-a", "ak-3391", "eyJhbGciOi"],
    ),
    (
        "json-in-string-twice",
        json.dumps({"envelope": json.dumps({"message": json.dumps({"password": "hunter2-b", "cvv": "739"})})}),
        ["hunter2-b", '"739"', '\\"739\\"'],
    ),
    (
        "json-in-string-kvlist",
        {"request": json.dumps({"client_secret": "cs-ffa1", "token": {"value": "tv-5512"}})},
        ["cs-ffa1", "tv-5512"],
    ),
    (
        "cookie-header",
        "GET /cart HTTP/1.1\r\nHost: shop\r\nCookie: theme=dark; session=sess-8f3a; csrf=csrf-11c2\r\n\r\n",
        ["sess-8f3a", "csrf-11c2"],
    ),
    ("cookie-in-json", json.dumps({"headers": {"x": "1"}, "raw": "Cookie: lang=de; session=sess-77aa"}), ["sess-77aa"]),
    ("set-cookie", "HTTP/1.1 200 OK\nSet-Cookie: sid=sid-4c1d; Path=/; HttpOnly\n\n{}", ["sid-4c1d"]),
    (
        "digest-auth",
        'POST /x HTTP/1.1\nAuthorization: Digest username="erp-user", realm="erp", nonce="dcd98b7102dd2f0e", '
        'uri="/x", response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b"\n\n',
        ["erp-user", "dcd98b7102dd2f0e", "6629fae49393a05397450978507c4ef1", "0a4f113b"],
    ),
    ("quoted-with-space", 'login ok, password="correct horse battery" user=bob', ["correct horse", "horse battery"]),
    ("quoted-with-space-json", json.dumps({"note": "cfg api_key='live key 42' set"}), ["live key 42", "key 42"]),
    ("card-double-spaces", "paid with " + "  ".join(VISA_GROUPS) + ", thanks", ["  ".join(VISA_GROUPS), VISA]),
    ("card-dots", "card " + ".".join(VISA_GROUPS) + " ok", [".".join(VISA_GROUPS)]),
    ("card-tabs", "card\t" + "\t".join(VISA_GROUPS) + "\tok", ["\t".join(VISA_GROUPS), "\\t".join(VISA_GROUPS)]),
    (
        "card-nbsp",
        json.dumps({"note": "card " + "\u00a0".join(VISA_GROUPS)}, ensure_ascii=False),
        ["\u00a0".join(VISA_GROUPS), "\\u00a0".join(VISA_GROUPS)],
    ),
    (
        "url-encoded-form",
        "email=jane.doe%40example.com&password=p%40ss+w0rd&card="
        + "+".join(VISA_GROUPS)
        + "&next=%2Fcb%3Fapi_key%3Dak-9af0%26lang%3Dde",
        ["jane.doe", "p%40ss", "ss+w0rd", "+".join(VISA_GROUPS), "ak-9af0"],
    ),
    ("url-encoded-card", "q=" + "%20".join(VISA_GROUPS), ["%20".join(VISA_GROUPS)]),
    ("xml-element", "<login><user>bob</user><password>hunter 2 c</password></login>", ["hunter 2 c", "hunter"]),
    (
        "soap-wsse",
        "<soapenv:Envelope><soapenv:Header><wsse:Security><wsse:UsernameToken><wsse:Username>erp</wsse:Username>"
        '<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0'
        '#PasswordText">Pw d0-55</wsse:Password></wsse:UsernameToken></wsse:Security></soapenv:Header>'
        "<soapenv:Body><ns:Order><ns:cardNumber>"
        + VISA
        + "</ns:cardNumber></ns:Order></soapenv:Body></soapenv:Envelope>",
        ["Pw d0-55", VISA],
    ),
    (
        "iban-lower-spaced",
        json.dumps({"note": "refund to de89 3704 0044 0532 0130 00 please"}),
        ["de89 3704", "0532 0130"],
    ),
    ("iban-lower-compact", "refund de89370400440532013000 today", ["de89370400440532013000", "370400440532013000"]),
    ("iban-spaced-then-word", "IBAN BE68 5390 0754 7034 DANK", ["5390 0754 7034"]),
    ("cvv-hash", json.dumps({"order": "SO-77", "card_last4": "1111", "cvv": "739"}), ['"739"']),
    ("worst-case-digits", _worst_case_digits(), [" ".join(VISA_GROUPS)]),
    ("binary", b"\x00\xff\x10card=" + VISA.encode() + b"; Cookie: a=1; session=sess-bin9\n\xfe", [VISA, "sess-bin9"]),
]


def _strings(value, out: list[str]) -> None:
    """Every string in an API answer, and in any JSON document such a string holds."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(k)
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
    elif isinstance(value, str):
        out.append(value)
        if value.lstrip()[:1] in ("{", "["):
            try:
                _strings(json.loads(value), out)
            except ValueError:
                pass


@pytest.fixture(scope="module", params=["sqlite", "s3"])
def loaded(request, tmp_path_factory):
    """A sidecar on the given backend with the whole corpus sent to it (one request, one ID a case)."""
    env, snapshots, moto = {}, {}, None
    patch = pytest.MonkeyPatch()
    if request.param == "s3":
        moto = MotoServer().start()
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        for k, v in env.items():
            patch.setenv(k, v)  # for make_bucket's client in this process
        snapshots = {"backend": f"s3://{make_bucket(moto)}/corpus", "s3_endpoint_url": moto.url}
    sc = Sidecar(
        tmp_path_factory.mktemp(f"corpus-{request.param}"), {"api": {"token": TOKEN}, "snapshots": snapshots}, env
    )
    try:
        sc.start()
        req = make_request(
            *[{"corr": f"corpus-{case}", "direction": "request", "body": body} for case, body, _ in CORPUS]
        )
        status, _, raw = post(sc.otlp_http + "/v1/logs", req.SerializeToString(), timeout=60)
        resp = ExportLogsServiceResponse()
        resp.ParseFromString(raw)
        assert status == 200 and resp.partial_success.rejected_log_records == 0, resp
        yield sc
    finally:
        sc.stop()
        if moto is not None:
            moto.stop()
        patch.undo()


@pytest.mark.parametrize("case, body, secrets", CORPUS, ids=[c[0] for c in CORPUS])
def test_no_secret_of_the_corpus_is_visible_through_the_api(loaded, case, body, secrets):
    status, raw = loaded.get(f"/api/v1/transactions/corpus-{case}", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, raw
    answer = json.loads(raw)
    (snap,) = answer["unlinked_snapshots"]
    assert snap["redactions"] >= 1
    texts = [raw.decode("utf-8", "replace")]
    _strings(answer, texts)
    if snap["body_encoding"] == "base64":
        import base64

        texts.append(base64.b64decode(snap["body"]).decode("latin-1"))
    visible = "\n".join(texts)
    for secret in secrets:
        assert secret not in visible, f"{secret!r} visible for {case}"
    # The body hash: keyed with the snapshot key (whoever holds it can check a copy of the body),
    # never the plain SHA-256, which would let anyone test guesses for what was redacted.
    original = body_bytes(body)
    assert hashlib.sha256(original).hexdigest() not in visible
    key = (loaded.workdir / "data" / "snapshot-redaction.key").read_bytes().strip()
    assert hmac.digest(key, original, "sha256").hex() in visible
