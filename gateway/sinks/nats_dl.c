/*
 * nats_dl.c — see nats_dl.h.
 */
#include "sinks/nats_dl.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "sinks/dl.h"

#define NATS_SONAME "libnats.so.3.4"

struct loaded {
	nats_dl_api api;
	int ok;
	char why[256];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct loaded lib; /* written once, under `once`; read-only after */

#define E(field, name) {name, (void **)&lib.api.field}
static void load(void)
{
	const dl_entry e[] = {
		E(options_create, "natsOptions_Create"),
		E(options_destroy, "natsOptions_Destroy"),
		E(options_set_servers, "natsOptions_SetServers"),
		E(options_set_timeout, "natsOptions_SetTimeout"),
		E(options_set_allow_reconnect, "natsOptions_SetAllowReconnect"),
		E(options_set_name, "natsOptions_SetName"),
		E(options_set_user_info, "natsOptions_SetUserInfo"),
		E(options_set_token, "natsOptions_SetToken"),
		E(options_set_user_credentials_from_files, "natsOptions_SetUserCredentialsFromFiles"),
		E(options_set_secure, "natsOptions_SetSecure"),
		E(options_load_ca, "natsOptions_LoadCATrustedCertificates"),
		E(options_load_chain, "natsOptions_LoadCertificatesChain"),
		E(connect, "natsConnection_Connect"),
		E(conn_close, "natsConnection_Close"),
		E(conn_destroy, "natsConnection_Destroy"),
		E(conn_status, "natsConnection_Status"),
		E(conn_max_payload, "natsConnection_GetMaxPayload"),
		E(conn_connected_url, "natsConnection_GetConnectedUrl"),
		E(jetstream, "natsConnection_JetStream"),
		E(js_destroy, "jsCtx_Destroy"),
		E(js_options_init, "jsOptions_Init"),
		E(js_pub_options_init, "jsPubOptions_Init"),
		E(msg_create, "natsMsg_Create"),
		E(msg_destroy, "natsMsg_Destroy"),
		E(js_publish_msg_async, "js_PublishMsgAsync"),
		E(js_publish_async_complete, "js_PublishAsyncComplete"),
		E(js_publish_async_pending, "js_PublishAsyncGetPendingList"),
		E(msg_list_destroy, "natsMsgList_Destroy"),
		E(status_text, "natsStatus_GetText"),
		E(last_error, "nats_GetLastError"),
	};
	if (!dl_load_table(NATS_SONAME, e, sizeof e / sizeof e[0], lib.why, sizeof lib.why)) {
		if (strstr(lib.why, "cannot open"))
			strncat(lib.why, " (apt-get install libnats3.4)", sizeof lib.why - strlen(lib.why) - 1);
		return;
	}
	lib.ok = 1; /* the handle stays open for the life of the process (libnats has threads) */
}
#undef E

int nats_dl_load(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (lib.ok)
		return 0;
	return tg_seterr(err, errlen, TG_EUNSUPPORTED, "cannot load libnats (needed by nats sinks): %s", lib.why);
}

const nats_dl_api *nats_dl(void) { return &lib.api; }
