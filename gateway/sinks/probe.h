/*
 * probe.h — is an HTTP(S) endpoint there and answering? A TCP connect to the host and port
 * of a URL and one HTTP request line, bounded by a timeout: what the forwarder uses, while
 * a sink backs off after an outage, to notice the uplink coming back without spending a
 * signed request (or a TLS handshake) on it, and what an AWS request that has heard nothing
 * for a while uses to tell a black-holed connection from a slow answer (aws.c). Shared by
 * the sinks that talk to a URL (kinesis, s3).
 */
#ifndef TG_SINKS_PROBE_H
#define TG_SINKS_PROBE_H

#include <stddef.h>

/* Split url ("scheme://host[:port][/...]", host may be "[v6]") into host and port (the
 * scheme's default: 443 for https, 80 for http). 0, or TG_EINVAL when it is not such a URL. */
int sink_probe_split(const char *url, char *host, size_t hostlen, char *port, size_t portlen);
/* 0 when host:port of url accepts a TCP connection and answers a HEAD request line (any
 * bytes, a close or a reset) within timeout_ms in all; TG_ENET when refused, unreachable or
 * silent (a black hole: accepted, never answered), TG_EINVAL for a bad URL. Name resolution
 * (getaddrinfo) is not bounded by the timeout. */
int sink_probe_url(const char *url, int timeout_ms);

#endif
