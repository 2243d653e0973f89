/*
 * test_sink_bridges.c — the parts of the message sinks (mqtt bridge, nats) that need no
 * server: topic/subject templates, the per-connection publish-rate limiter (time is
 * injected), PUBACK and JetStream acknowledgement classification, the record screening
 * that makes a record poison, option checks at open, and one send() of each sink against
 * a closed loopback port to pin the whole-call failure contract (every record RETRY, a
 * negative return, a reason; poison records still dead-lettered while the remote is down).
 * Behaviour against real servers is in tests/integration/test_bridge_mqtt.py and
 * test_bridge_nats.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "sinks/mqtt_bridge.h"
#include "sinks/msgsink.h"
#include "sinks/nats_js.h"
#include "sinks/registry.h"

static sink_record rec(const char *msg_id, const char *table, const char *pkey, size_t len)
{
	static char data[300000];
	memset(data, 'x', sizeof data);
	return (sink_record){.id = 1, .msg_id = msg_id, .table = table, .pkey = pkey, .data = data, .len = len};
}

/* ---- templates ------------------------------------------------------------------------ */

static void test_tmpl_expands_every_placeholder(void **state)
{
	(void)state;
	msgsink_tmpl t;
	tg_buf b = {0};
	char err[256];
	sink_record r = rec("gw-1-7", "alerts", "dev-0003", 2);
	assert_int_equal(msgsink_tmpl_compile(&t, "<prefix>/<table>/<thing>", err, sizeof err), 0);
	assert_int_equal(msgsink_tmpl_expand(&t, &b, "dt/site-1", "gw-1", &r), 0);
	assert_string_equal(b.p, "dt/site-1/alerts/dev-0003");
	msgsink_tmpl_free(&t);
	assert_int_equal(msgsink_tmpl_compile(&t, "x.<gateway>.<thing>.<table>.y", err, sizeof err), 0);
	assert_int_equal(msgsink_tmpl_expand(&t, &b, "p", "gw-1", &r), 0);
	assert_string_equal(b.p, "x.gw-1.dev-0003.alerts.y");
	assert_int_equal(b.len, strlen("x.gw-1.dev-0003.alerts.y"));
	msgsink_tmpl_free(&t);
	/* no placeholder, and an empty expansion */
	assert_int_equal(msgsink_tmpl_compile(&t, "fixed/topic", err, sizeof err), 0);
	assert_int_equal(msgsink_tmpl_expand(&t, &b, "p", "g", &r), 0);
	assert_string_equal(b.p, "fixed/topic");
	msgsink_tmpl_free(&t);
	assert_int_equal(msgsink_tmpl_compile(&t, "<prefix>", err, sizeof err), 0);
	assert_int_equal(msgsink_tmpl_expand(&t, &b, "", "g", &r), 0);
	assert_string_equal(b.p, "");
	assert_int_equal(b.len, 0);
	msgsink_tmpl_free(&t);
	tg_buf_free(&b);
}

static void test_tmpl_refuses_unknown_placeholders_with_column(void **state)
{
	(void)state;
	msgsink_tmpl t;
	char err[256];
	assert_int_equal(msgsink_tmpl_compile(&t, "a/<thing>/<thingy>", err, sizeof err), TG_EINVAL);
	assert_non_null(strstr(err, "column 11"));
	assert_non_null(strstr(err, "<thingy>"));
	assert_int_equal(msgsink_tmpl_compile(&t, "a/<thing", err, sizeof err), TG_EINVAL);
	assert_non_null(strstr(err, "column 3"));
	msgsink_tmpl_free(&t); /* a failed compile leaves nothing behind; free is still safe */
	msgsink_tmpl_free(NULL);
}

static void test_reason_joins_what_is_there(void **state)
{
	(void)state;
	char err[64] = "untouched";
	assert_int_equal(msgsink_reason(err, sizeof err, TG_EPERM, "", NULL, ""), TG_EPERM);
	assert_string_equal(err, "untouched");
	msgsink_reason(err, sizeof err, TG_EPERM, "too big", "", "");
	assert_string_equal(err, "too big");
	msgsink_reason(err, sizeof err, TG_ERETRY, "", "PUBACK 0x99", "connection lost");
	assert_string_equal(err, "PUBACK 0x99; connection lost");
	char tiny[8];
	msgsink_reason(tiny, sizeof tiny, TG_ERETRY, "abcdef", "ghijkl", NULL);
	assert_string_equal(tiny, "abcdef;");
}

/* ---- the publish-rate limiter ------------------------------------------------------------ */

static void test_rate_allows_max_per_any_second(void **state)
{
	(void)state;
	sink_mqtt_rate r;
	assert_int_equal(sink_mqtt_rate_init(&r, 100), 0);
	int64_t now = 1000000, sent = 0;
	int64_t times[1000];
	/* drive it like the sink: publish whenever the delay is 0, else advance by the delay */
	while (sent < 1000) {
		int64_t d = sink_mqtt_rate_delay(&r, now);
		if (d) {
			assert_true(d > 0 && d <= 1000);
			now += d;
			continue;
		}
		sink_mqtt_rate_note(&r, now);
		times[sent++] = now;
		now += sent % 7 == 0 ? 3 : 0; /* bursts and pauses */
	}
	/* no one-second window holds more than 100 publishes */
	for (int64_t i = 100; i < 1000; i++)
		assert_true(times[i] - times[i - 100] >= 1000);
	/* and it holds back no more than it must: after the first 100, one window per 100 */
	assert_true(times[999] - times[99] <= 9000 + 50);
	sink_mqtt_rate_free(&r);

	/* 0 per second = unlimited */
	assert_int_equal(sink_mqtt_rate_init(&r, 0), 0);
	for (int i = 0; i < 100000; i++) {
		assert_int_equal(sink_mqtt_rate_delay(&r, 5), 0);
		sink_mqtt_rate_note(&r, 5);
	}
	sink_mqtt_rate_free(&r);
	sink_mqtt_rate_free(NULL);
}

static void test_rate_delay_is_time_to_oldest_expiry(void **state)
{
	(void)state;
	sink_mqtt_rate r;
	assert_int_equal(sink_mqtt_rate_init(&r, 3), 0);
	sink_mqtt_rate_note(&r, 100);
	sink_mqtt_rate_note(&r, 400);
	assert_int_equal(sink_mqtt_rate_delay(&r, 500), 0);
	sink_mqtt_rate_note(&r, 500);
	assert_int_equal(sink_mqtt_rate_delay(&r, 600), 500);  /* 100 leaves the window at 1100 */
	assert_int_equal(sink_mqtt_rate_delay(&r, 1100), 0);
	sink_mqtt_rate_note(&r, 1100);
	assert_int_equal(sink_mqtt_rate_delay(&r, 1100), 300); /* next: 400 + 1000 */
	sink_mqtt_rate_free(&r);
}

/* ---- classification and screening ------------------------------------------------------- */

static void test_puback_reason_codes(void **state)
{
	(void)state;
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_SUCCESS), SINK_OK);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_NO_MATCHING_SUBSCRIBERS), SINK_OK);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_TOPIC_NAME_INVALID), SINK_POISON);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_PACKET_TOO_LARGE), SINK_POISON);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_PAYLOAD_FORMAT_INVALID), SINK_POISON);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_NOT_AUTHORIZED), SINK_RETRY);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_QUOTA_EXCEEDED), SINK_RETRY);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_UNSPECIFIED), SINK_RETRY);
	assert_int_equal(sink_mqtt_puback_status(MQTT_RC_IMPLEMENTATION_SPECIFIC), SINK_RETRY);
}

static sink_status chk(const sink_record *r, const char *topic, char *why)
{
	return sink_mqtt_check(r, topic, strlen(topic), 128 * 1024, MQTT_BRIDGE_AWS_MAX_TOPIC, MQTT_BRIDGE_AWS_MAX_LEVELS,
			       why, 256);
}

static void test_mqtt_check_screens_what_iot_core_refuses(void **state)
{
	(void)state;
	char why[256];
	sink_record ok = rec("gw-1", "telemetry", "dev-1", 128 * 1024);
	assert_int_equal(chk(&ok, "tidegate/telemetry/dev-1", why), SINK_OK);
	sink_record big = rec("gw-2", "telemetry", "dev-1", 128 * 1024 + 1);
	assert_int_equal(chk(&big, "tidegate/telemetry/dev-1", why), SINK_POISON);
	assert_non_null(strstr(why, "gw-2"));
	assert_non_null(strstr(why, "131073 bytes over max_payload 131072"));
	assert_int_equal(chk(&ok, "a/+/b", why), SINK_POISON);
	assert_non_null(strstr(why, "wildcard"));
	assert_int_equal(chk(&ok, "a/#", why), SINK_POISON);
	assert_int_equal(chk(&ok, "", why), SINK_POISON);
	assert_int_equal(chk(&ok, "1/2/3/4/5/6/7/8", why), SINK_OK);
	assert_int_equal(chk(&ok, "1/2/3/4/5/6/7/8/9", why), SINK_POISON);
	assert_non_null(strstr(why, "9 levels"));
	char longt[300];
	memset(longt, 'a', sizeof longt - 1);
	longt[sizeof longt - 1] = '\0';
	assert_int_equal(chk(&ok, longt, why), SINK_POISON);
	/* with the limits off, only MQTT's own rules apply */
	assert_int_equal(sink_mqtt_check(&ok, longt, strlen(longt), 1 << 20, 0, 0, why, sizeof why), SINK_OK);
	assert_int_equal(chk(&ok, "a/\xc3\x28", why), SINK_POISON); /* invalid UTF-8 */
	assert_non_null(strstr(why, "UTF-8"));
	assert_int_equal(sink_mqtt_check(&ok, "a\0b", 3, 1 << 20, 0, 0, why, sizeof why), SINK_POISON);
}

static void test_nats_check_and_ack_classes(void **state)
{
	(void)state;
	char why[256];
	sink_record r = rec("gw-9", "telemetry", "dev-1", 1000);
	size_t h = sink_nats_header_bytes("gw-9", NULL);
	assert_int_equal(h, strlen("NATS/1.0\r\nNats-Msg-Id: gw-9\r\n\r\n"));
	assert_int_equal(sink_nats_header_bytes("gw-9", "TG"),
			 strlen("NATS/1.0\r\nNats-Msg-Id: gw-9\r\nNats-Expected-Stream: TG\r\n\r\n"));
	assert_int_equal(sink_nats_check(&r, "tidegate.telemetry.dev-1", 24, 1000 + h, h, why, sizeof why), SINK_OK);
	assert_int_equal(sink_nats_check(&r, "tidegate.telemetry.dev-1", 24, 999 + h, h, why, sizeof why), SINK_POISON);
	assert_non_null(strstr(why, "over max_payload"));
	assert_int_equal(sink_nats_check(&r, "tidegate.telemetry.dev-1", 24, 0, h, why, sizeof why), SINK_OK);
	static const char *bad[] = {"", ".a", "a.", "a..b", "a.*.b", "a.>", "a b", "a\tb", "*"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(sink_nats_check(&r, bad[i], strlen(bad[i]), 0, h, why, sizeof why), SINK_POISON);
		assert_non_null(strstr(why, "gw-9"));
	}
	static const char *good[] = {"a", "a.b-c_d:e.f", "a.b*c.d>e", "dev.0001.x"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		assert_int_equal(sink_nats_check(&r, good[i], strlen(good[i]), 0, h, why, sizeof why), SINK_OK);
	assert_int_equal(sink_nats_ack_status(SINK_NATS_JS_MSG_TOO_BIG), SINK_POISON);
	assert_int_equal(sink_nats_ack_status(0), SINK_RETRY);      /* no responders, timeout */
	assert_int_equal(sink_nats_ack_status(10060), SINK_RETRY);  /* expected stream does not match */
	assert_int_equal(sink_nats_ack_status(10077), SINK_RETRY);  /* store failed (stream full) */
}

/* ---- open and send against nothing ------------------------------------------------------ */

static const sink_ops *find(const char *type)
{
	const sink_ops *o = sink_ops_find(type);
	assert_non_null(o);
	return o;
}

static void *opts_with(const sink_ops *ops, const char *const *kv)
{
	char err[256];
	void *o = calloc(1, ops->conf.options_size);
	assert_non_null(o);
	assert_int_equal(config_table_defaults(ops->conf.options, o, err, sizeof err), 0);
	for (; *kv; kv += 2)
		assert_int_equal(config_table_set(ops->conf.options, o, kv[0], kv[1], err, sizeof err), 0);
	return o;
}

static void opts_free(const sink_ops *ops, void *o)
{
	config_table_free(ops->conf.options, o);
	free(o);
}

static void test_open_refuses_bad_options(void **state)
{
	(void)state;
	char err[256];
	sink_limits lim = {0};
	sink_env env = {.gateway_id = "gw-u"};
	const sink_ops *m = find("mqtt");
	const char *bad_topic[] = {"host", "127.0.0.1", "topic", "<prefix>/<tabel>", NULL};
	void *o = opts_with(m, bad_topic);
	assert_null(m->open(o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "unknown placeholder <tabel>"));
	opts_free(m, o);
	const char *half_cert[] = {"host", "127.0.0.1", "cert_file", "/x.crt", NULL};
	o = opts_with(m, half_cert);
	assert_null(m->open(o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "cert_file and key_file go together"));
	opts_free(m, o);
	const char *good[] = {"host", "127.0.0.1", "max_records", "777", NULL};
	o = opts_with(m, good);
	sink *s = m->open(o, &env, &lim, err, sizeof err);
	assert_non_null(s);
	assert_int_equal(lim.max_records, 777);
	assert_int_equal(lim.max_age_ms, 0);
	m->close(s);
	opts_free(m, o);

	const sink_ops *n = find("nats");
	const char *nats_bad[] = {"url", " , ", NULL};
	o = opts_with(n, nats_bad);
	assert_null(n->open(o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "url lists no server"));
	opts_free(n, o);
	const char *nats_tls[] = {"url", "nats://127.0.0.1:1", "ca_file", "/ca.crt", NULL};
	o = opts_with(n, nats_tls);
	assert_null(n->open(o, &env, &lim, err, sizeof err));
	assert_non_null(strstr(err, "TLS is off"));
	opts_free(n, o);
}

/* A loopback port nobody listens on: bind, read the port, close. */
static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof a;
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void send_to_nothing(const char *type, const char *k, const char *url_prefix, const char *k2, const char *v2,
			    const char *expect)
{
	char err[512], port[64];
	sink_limits lim = {0};
	sink_env env = {.gateway_id = "gw-u"};
	const sink_ops *ops = find(type);
	snprintf(port, sizeof port, "%s%d", url_prefix, closed_port());
	const char *kv[] = {k, port, "max_payload", "4k", "connect_timeout", "2s", k2, v2, NULL};
	void *o = opts_with(ops, kv);
	sink *s = ops->open(o, &env, &lim, err, sizeof err);
	assert_non_null(s);
	sink_record r[3] = {rec("gw-u-1", "telemetry", "dev-1", 10), rec("gw-u-2", "telemetry", "dev-1", 10),
			    rec("gw-u-3", "telemetry", "dev-2", 10)};
	sink_status st[3] = {SINK_OK, SINK_OK, SINK_OK};
	err[0] = '\0';
	int rc = ops->send(s, r, 3, st, 0, err, sizeof err);
	assert_true(rc < 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(st[i], SINK_RETRY);
	assert_non_null(strstr(err, expect));
	/* a poison record is dead-lettered even while the remote is down; the rest wait */
	r[1] = rec("gw-u-2", "telemetry", "dev-1", 8000);
	err[0] = '\0';
	rc = ops->send(s, r, 3, st, 0, err, sizeof err);
	assert_int_equal(rc, 0);
	assert_int_equal(st[0], SINK_RETRY);
	assert_int_equal(st[1], SINK_POISON);
	assert_int_equal(st[2], SINK_RETRY);
	assert_non_null(strstr(err, "gw-u-2"));
	assert_non_null(strstr(err, expect));
	ops->close(s);
	opts_free(ops, o);
}

static void test_send_with_remote_down(void **state)
{
	(void)state;
	send_to_nothing("mqtt", "port", "", "host", "127.0.0.1", "Connection refused");
	send_to_nothing("nats", "url", "nats://127.0.0.1:", NULL, NULL, "No server available");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tmpl_expands_every_placeholder),
		cmocka_unit_test(test_tmpl_refuses_unknown_placeholders_with_column),
		cmocka_unit_test(test_reason_joins_what_is_there),
		cmocka_unit_test(test_rate_allows_max_per_any_second),
		cmocka_unit_test(test_rate_delay_is_time_to_oldest_expiry),
		cmocka_unit_test(test_puback_reason_codes),
		cmocka_unit_test(test_mqtt_check_screens_what_iot_core_refuses),
		cmocka_unit_test(test_nats_check_and_ack_classes),
		cmocka_unit_test(test_open_refuses_bad_options),
		cmocka_unit_test(test_send_with_remote_down),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
