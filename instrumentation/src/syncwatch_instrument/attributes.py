"""The attribute names syncwatch reads (SPEC.md, "What integrations emit"). Plain strings, so an
integration in any language can emit the same keys; see README.md for the table."""

CORRELATION_ID = "syncwatch.correlation_id"
# OpenTelemetry's own name for a correlation ID; syncwatch reads it first when present.
MESSAGING_CONVERSATION_ID = "messaging.message.conversation_id"

STAGE = "syncwatch.stage"
FLOW = "syncwatch.flow"
SOURCE = "syncwatch.source"
DESTINATION = "syncwatch.destination"
SOURCE_CHANGED_AT = "syncwatch.source.changed_at"
RESEND_COUNT = "http.request.resend_count"
HTTP_STATUS_CODE = "http.response.status_code"
RESPONSE_CODE = "syncwatch.response_code"  # non-HTTP response codes
ERROR_TYPE = "error.type"
IDEMPOTENCY_KEY = "syncwatch.idempotency_key"
PAYLOAD_DIRECTION = "syncwatch.payload.direction"
DESTINATION_RECORD_ID = "syncwatch.destination.record_id"  # the record the destination created

STAGE_SOURCE = "source"
STAGE_ATTEMPT = "attempt"
STAGE_CONFIRM = "confirm"
STAGE_FAIL = "fail"

DIRECTION_REQUEST = "request"
DIRECTION_RESPONSE = "response"
