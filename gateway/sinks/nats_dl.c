/*
 * nats_dl.c — see nats_dl.h.
 */
#include "sinks/nats_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

#define NATS_SONAME "libnats.so.3.4"

struct loaded {
	nats_dl_api api;
	int ok;
	char why[256];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct loaded lib; /* written once, under `once`; read-only after */

static void *sym(void *h, const char *name)
{
	void *p = dlsym(h, name);
	if (!p && !lib.why[0])
		snprintf(lib.why, sizeof lib.why, "%s: no symbol %s", NATS_SONAME, name);
	return p;
}

/* dlsym returns object pointers; POSIX guarantees they convert to function pointers */
#define LOAD(field, name) (*(void **)&lib.api.field = sym(h, name))

static void load(void)
{
	void *h = dlopen(NATS_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(lib.why, sizeof lib.why, "%s (apt-get install libnats3.4)", dlerror());
		return;
	}
	LOAD(options_create, "natsOptions_Create");
	LOAD(options_destroy, "natsOptions_Destroy");
	LOAD(options_set_servers, "natsOptions_SetServers");
	LOAD(options_set_timeout, "natsOptions_SetTimeout");
	LOAD(options_set_allow_reconnect, "natsOptions_SetAllowReconnect");
	LOAD(options_set_name, "natsOptions_SetName");
	LOAD(options_set_user_info, "natsOptions_SetUserInfo");
	LOAD(options_set_token, "natsOptions_SetToken");
	LOAD(options_set_user_credentials_from_files, "natsOptions_SetUserCredentialsFromFiles");
	LOAD(options_set_secure, "natsOptions_SetSecure");
	LOAD(options_load_ca, "natsOptions_LoadCATrustedCertificates");
	LOAD(options_load_chain, "natsOptions_LoadCertificatesChain");
	LOAD(connect, "natsConnection_Connect");
	LOAD(conn_close, "natsConnection_Close");
	LOAD(conn_destroy, "natsConnection_Destroy");
	LOAD(conn_status, "natsConnection_Status");
	LOAD(conn_max_payload, "natsConnection_GetMaxPayload");
	LOAD(conn_connected_url, "natsConnection_GetConnectedUrl");
	LOAD(jetstream, "natsConnection_JetStream");
	LOAD(js_destroy, "jsCtx_Destroy");
	LOAD(js_options_init, "jsOptions_Init");
	LOAD(js_pub_options_init, "jsPubOptions_Init");
	LOAD(msg_create, "natsMsg_Create");
	LOAD(msg_destroy, "natsMsg_Destroy");
	LOAD(js_publish_msg_async, "js_PublishMsgAsync");
	LOAD(js_publish_async_complete, "js_PublishAsyncComplete");
	LOAD(js_publish_async_pending, "js_PublishAsyncGetPendingList");
	LOAD(msg_list_destroy, "natsMsgList_Destroy");
	LOAD(status_text, "natsStatus_GetText");
	LOAD(last_error, "nats_GetLastError");
	if (lib.why[0]) {
		dlclose(h);
		return;
	}
	lib.ok = 1; /* the handle stays open for the life of the process (libnats has threads) */
}
#undef LOAD

int nats_dl_load(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (lib.ok)
		return 0;
	return tg_seterr(err, errlen, TG_EUNSUPPORTED, "cannot load libnats (needed by nats sinks): %s", lib.why);
}

const nats_dl_api *nats_dl(void) { return &lib.api; }
