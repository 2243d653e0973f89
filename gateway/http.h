/*
 * http.h — the ops HTTP endpoint (libmicrohttpd, its own thread, loopback by default):
 * GET /metrics (Prometheus text), GET /healthz (JSON; 200 "ok" when connected to the broker
 * and no sink is degraded, else 503 "degraded" with the reasons: see forwarder_health),
 * GET /api/status (the same JSON, always 200).
 * Request bodies are refused (nothing here takes input), so there is no body to cap.
 *
 * The handler renders through a callback the daemon supplies, reading only atomics, so
 * it never takes a lock the ingest thread holds.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <stddef.h>

typedef struct http_server http_server;

/* Render path into a malloc'ed body; set *status and *content_type. NULL = 404. */
typedef char *(*http_render_fn)(void *ud, const char *path, int *status, const char **content_type);

http_server *http_start(const char *bind, int port, http_render_fn render, void *ud, char *err, size_t errlen);
void http_stop(http_server *h); /* NULL-safe */
int http_port(const http_server *h); /* the bound port (useful with port 0 in tests) */

#endif
