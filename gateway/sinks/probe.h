/*
 * probe.h — is an HTTP(S) endpoint there? A TCP connect to the host and port of a URL,
 * bounded by a timeout, with nothing sent: what the forwarder uses, while a sink backs
 * off after an outage, to notice the uplink coming back without spending a request (or a
 * TLS handshake) on it. Shared by the sinks that talk to a URL (kinesis, s3, webhook).
 */
#ifndef TG_SINKS_PROBE_H
#define TG_SINKS_PROBE_H

#include <stddef.h>

/* Split url ("scheme://host[:port][/...]", host may be "[v6]") into host and port (the
 * scheme's default: 443 for https, 80 for http). 0, or TG_EINVAL when it is not such a URL. */
int sink_probe_split(const char *url, char *host, size_t hostlen, char *port, size_t portlen);
/* 0 when host:port of url accepts a TCP connection within timeout_ms (the connection is
 * closed at once), TG_ENET when refused, unreachable or timed out, TG_EINVAL for a bad URL.
 * Name resolution (getaddrinfo) is not bounded by the timeout. */
int sink_probe_url(const char *url, int timeout_ms);

#endif
