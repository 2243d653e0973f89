"""The test harness's own promises (issue 12 item 19): a client whose network thread dies
of a socket error is seen as disconnected, at the time it happened.

paho 1.6 catches only ConnectionError around its socket writes. When a broker cuts a TLS
connection mid-write, the write may raise ssl.SSLEOFError instead, which ended the network
thread silently: no on_disconnect, and a test waiting for the disconnect (the auth plugin's
revoke test) reported that the device never disconnected. The error is injected into a real
connection's socket here, so the case is exercised every run rather than when the timing
happens to produce it.
"""
import ssl
import time

import harness
from harness import wait_until


def _cut_mid_write(client):
    """Make the next write on client's TLS socket fail as a cut connection does."""
    sock = client.socket()

    def send(*a, **kw):
        raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2393)")

    sock.send = send
    return sock


def test_socket_error_in_client_thread_is_the_disconnect(broker, certs):
    cert, key = certs.thing("dev-0001")
    c = harness.mqtt_client(broker, cert, key, "dev-0001")
    seen = []
    c.on_socket_error = lambda client, exc: seen.append((time.monotonic(), exc))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    sock = c.socket()
    try:
        wait_until(c.is_connected, 10, what="connected")
        _cut_mid_write(c)
        t0 = time.monotonic()
        c.publish("devices/dev-0001/telemetry", b"{}", qos=1)
        wait_until(lambda: c.socket_error is not None, 5, what="the socket error to count as the disconnect")
        at, exc = c.socket_error
        assert isinstance(exc, ssl.SSLEOFError)
        assert t0 <= at <= time.monotonic()
        assert seen and seen[0][1] is exc, "on_socket_error must run with the exception"
        c._thread.join(5)
        assert not c._thread.is_alive()
    finally:
        c.loop_stop()
        sock.close()


def test_collector_fails_fast_when_its_connection_dies(broker):
    sub = harness.Collector(broker, "alerts/#")
    try:
        sock = _cut_mid_write(sub.c)
        sub.c.subscribe("errors/#", qos=1)  # a write: the injected error ends the thread
        wait_until(lambda: sub.c.socket_error is not None, 5, what="the subscriber's socket error")
        try:
            sub.snapshot()
        except AssertionError as e:
            assert "connection died" in str(e)
        else:
            raise AssertionError("snapshot() of a dead subscriber must fail the test")
    finally:
        sub.c.loop_stop()
        sock.close()
