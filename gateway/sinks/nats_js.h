/*
 * nats_js.h — the `nats` sink: NATS JetStream publishes with acknowledgements and
 * Nats-Msg-Id = msg_id, and its pure parts.
 *
 * The sink is reached through sink_nats_ops (sink.h); this header exists so the unit tests
 * can pin down what needs no server: which subjects can be published to, how many bytes
 * the headers add to a message (NATS's max_payload counts headers and data), and how a
 * JetStream publish error is read (record-specific or not).
 */
#ifndef TG_SINKS_NATS_JS_H
#define TG_SINKS_NATS_JS_H

#include <stddef.h>
#include <stdint.h>

#include "store/sink.h"

typedef struct nats_js_opts {
	char *url;                /* comma-separated server URLs */
	char *subject, *prefix;
	char *stream;             /* "" = any stream that captures the subject */
	int tls;
	char *ca_file, *cert_file, *key_file;
	char *user, *password, *token, *creds_file;
	int64_t max_inflight;
	int64_t max_payload;      /* 0 = the server's */
	int64_t connect_timeout_ms, ack_timeout_ms;
	int64_t max_records;
} nats_js_opts;

extern const sink_ops sink_nats_ops;

/* The JetStream error code for "message size exceeds maximum allowed" (the stream's
 * max_msg_size): the one publish error that is about the record itself. */
#define SINK_NATS_JS_MSG_TOO_BIG 10054

/* Bytes the headers add: "NATS/1.0\r\n", Nats-Msg-Id and, when stream is not empty,
 * Nats-Expected-Stream, then the blank line. */
size_t sink_nats_header_bytes(const char *msg_id, const char *stream);

/* SINK_OK when r can be published on subject, else SINK_POISON with the reason in why:
 * headers + payload over max_payload (0 = unchecked), a subject that is empty, has an
 * empty token (leading, trailing or doubled '.'), a wildcard token ("*" or ">"), or
 * whitespace or control characters. */
sink_status sink_nats_check(const sink_record *r, const char *subject, size_t subject_len, size_t max_payload,
			    size_t header_bytes, char *why, size_t whylen);

/* A negative publish acknowledgement: js_err_code is JetStream's error code (0 when the
 * failure is not JetStream's, e.g. no responders, a timeout). SINK_POISON for a message
 * over the stream's size limit, SINK_RETRY for everything else (no stream for the
 * subject, stream full, JetStream unavailable: states an operator can change). */
sink_status sink_nats_ack_status(int js_err_code);

#endif
