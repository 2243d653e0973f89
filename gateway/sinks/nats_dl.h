/*
 * nats_dl.h — libnats (the NATS C client, Debian's libnats3.4), loaded when the first
 * `nats` sink opens rather than linked into the daemon, like libcurl (curl_dl.h): a box
 * that does not forward to NATS neither maps the library nor needs it installed.
 *
 * Code that uses libnats includes this header instead of <nats/nats.h> (which it includes
 * for the types), calls nats_dl_load() first, and then calls the usual names: the macros
 * below route the functions tidegate uses through the loaded library.
 *
 * State: the table of entry points is process-wide, filled once under pthread_once and
 * read-only afterwards (libnats keeps its own process-wide state once a natsOptions is
 * created: its timer and callback threads).
 */
#ifndef TG_NATS_DL_H
#define TG_NATS_DL_H

#include <stddef.h>

#include <nats/nats.h>

typedef struct nats_dl_api {
	natsStatus (*options_create)(natsOptions **);
	void (*options_destroy)(natsOptions *);
	natsStatus (*options_set_servers)(natsOptions *, const char **, int);
	natsStatus (*options_set_timeout)(natsOptions *, int64_t);
	natsStatus (*options_set_allow_reconnect)(natsOptions *, bool);
	natsStatus (*options_set_name)(natsOptions *, const char *);
	natsStatus (*options_set_user_info)(natsOptions *, const char *, const char *);
	natsStatus (*options_set_token)(natsOptions *, const char *);
	natsStatus (*options_set_user_credentials_from_files)(natsOptions *, const char *, const char *);
	natsStatus (*options_set_secure)(natsOptions *, bool);
	natsStatus (*options_load_ca)(natsOptions *, const char *);
	natsStatus (*options_load_chain)(natsOptions *, const char *, const char *);
	natsStatus (*connect)(natsConnection **, natsOptions *);
	void (*conn_close)(natsConnection *);
	void (*conn_destroy)(natsConnection *);
	natsConnStatus (*conn_status)(natsConnection *);
	int64_t (*conn_max_payload)(natsConnection *);
	natsStatus (*conn_connected_url)(natsConnection *, char *, size_t);
	natsStatus (*jetstream)(jsCtx **, natsConnection *, jsOptions *);
	void (*js_destroy)(jsCtx *);
	natsStatus (*js_options_init)(jsOptions *);
	natsStatus (*js_pub_options_init)(jsPubOptions *);
	natsStatus (*msg_create)(natsMsg **, const char *, const char *, const char *, int);
	void (*msg_destroy)(natsMsg *);
	natsStatus (*js_publish_msg_async)(jsCtx *, natsMsg **, jsPubOptions *);
	natsStatus (*js_publish_async_complete)(jsCtx *, jsPubOptions *);
	natsStatus (*js_publish_async_pending)(natsMsgList *, jsCtx *);
	void (*msg_list_destroy)(natsMsgList *);
	const char *(*status_text)(natsStatus);
	const char *(*last_error)(natsStatus *);
} nats_dl_api;

/* Load libnats (once). Returns 0, or TG_EUNSUPPORTED with the reason in err. */
int nats_dl_load(char *err, size_t errlen);
/* The entry points; only valid after nats_dl_load() returned 0. */
const nats_dl_api *nats_dl(void);

#define natsOptions_Create(o) (nats_dl()->options_create(o))
#define natsOptions_Destroy(o) (nats_dl()->options_destroy(o))
#define natsOptions_SetServers(o, s, n) (nats_dl()->options_set_servers((o), (s), (n)))
#define natsOptions_SetTimeout(o, t) (nats_dl()->options_set_timeout((o), (t)))
#define natsOptions_SetAllowReconnect(o, a) (nats_dl()->options_set_allow_reconnect((o), (a)))
#define natsOptions_SetName(o, n) (nats_dl()->options_set_name((o), (n)))
#define natsOptions_SetUserInfo(o, u, p) (nats_dl()->options_set_user_info((o), (u), (p)))
#define natsOptions_SetToken(o, t) (nats_dl()->options_set_token((o), (t)))
#define natsOptions_SetUserCredentialsFromFiles(o, c, s) (nats_dl()->options_set_user_credentials_from_files((o), (c), (s)))
#define natsOptions_SetSecure(o, s) (nats_dl()->options_set_secure((o), (s)))
#define natsOptions_LoadCATrustedCertificates(o, f) (nats_dl()->options_load_ca((o), (f)))
#define natsOptions_LoadCertificatesChain(o, c, k) (nats_dl()->options_load_chain((o), (c), (k)))
#define natsConnection_Connect(c, o) (nats_dl()->connect((c), (o)))
#define natsConnection_Close(c) (nats_dl()->conn_close(c))
#define natsConnection_Destroy(c) (nats_dl()->conn_destroy(c))
#define natsConnection_Status(c) (nats_dl()->conn_status(c))
#define natsConnection_GetMaxPayload(c) (nats_dl()->conn_max_payload(c))
#define natsConnection_GetConnectedUrl(c, b, n) (nats_dl()->conn_connected_url((c), (b), (n)))
#define natsConnection_JetStream(j, c, o) (nats_dl()->jetstream((j), (c), (o)))
#define jsCtx_Destroy(j) (nats_dl()->js_destroy(j))
#define jsOptions_Init(o) (nats_dl()->js_options_init(o))
#define jsPubOptions_Init(o) (nats_dl()->js_pub_options_init(o))
#define natsMsg_Create(m, s, r, d, n) (nats_dl()->msg_create((m), (s), (r), (d), (n)))
#define natsMsg_Destroy(m) (nats_dl()->msg_destroy(m))
#define js_PublishMsgAsync(j, m, o) (nats_dl()->js_publish_msg_async((j), (m), (o)))
#define js_PublishAsyncComplete(j, o) (nats_dl()->js_publish_async_complete((j), (o)))
#define js_PublishAsyncGetPendingList(l, j) (nats_dl()->js_publish_async_pending((l), (j)))
#define natsMsgList_Destroy(l) (nats_dl()->msg_list_destroy(l))
#define natsStatus_GetText(s) (nats_dl()->status_text(s))
#define nats_GetLastError(s) (nats_dl()->last_error(s))

#endif
