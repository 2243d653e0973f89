/*
 * registry_cli.h — `tidegate device …`: the operator's command line over the registry.
 *
 * gateway/main.c dispatches `tidegate device ARGS` here as registry_cli_main(argc - 1,
 * argv + 1), i.e. argv[0] is "device". The function prints results on stdout and errors on
 * stderr and returns the process exit status: 0 success, 1 failure, 2 usage error.
 * Everything it needs comes from its arguments and the environment (TIDEGATE_REGISTRY,
 * TIDEGATE_PKI, TIDEGATE_CERTS); it keeps no state between calls.
 */
#ifndef TG_REGISTRY_CLI_H
#define TG_REGISTRY_CLI_H

int registry_cli_main(int argc, char **argv);

#endif
