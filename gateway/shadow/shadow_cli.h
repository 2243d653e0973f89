/*
 * shadow/shadow_cli.h — `tidegate shadow get|update|delete|list`.
 *
 * get, update and delete go through the running daemon, over MQTT, exactly as a device or
 * an app would: the CLI connects to the broker named in the config's [broker] section with
 * the gateway's certificate (a fresh client id), subscribes to the request's accepted and
 * rejected topics, publishes the request with its own clientToken and prints the answer.
 * So the change is made by the one writer, is durable when the answer comes, and reaches
 * the device (delta) and the sinks like any other. list reads the shadow table of the
 * outbox database read-only (it works with the daemon stopped, too).
 *
 * Exit status: 0 accepted / listed, 1 rejected (code and message on stderr, the rejection on
 * stdout) or no answer / no connection / no database, 2 usage error (a bad option value,
 * a name IoT Core would refuse, JSON that does not parse).
 */
#ifndef TG_SHADOW_CLI_H
#define TG_SHADOW_CLI_H

/* argv[0] is "shadow". */
int shadow_cli_main(int argc, char **argv);

#endif
