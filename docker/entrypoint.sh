#!/bin/sh
# pykbroker's container entrypoint.
#
#   (no arguments), or broker options   the broker, configured by $PYKBROKER_CONFIG (the image's
#                                       server.properties, or one mounted over it), then KAFKA_*
#                                       environment variables, then the options (--override k=v)
#   /path/to/other.properties [opts]    the broker, configured by that file instead
#   healthcheck [opts]                  one ApiVersions round trip to this container's broker
#   any other command                   run it (sh, kafka tools, ...)
#
# `exec` makes the broker PID 1 itself, so `docker stop`'s SIGTERM reaches it directly and it
# shuts down cleanly: flushes its logs and leaves the clean-shutdown marker.
set -eu

config="${PYKBROKER_CONFIG:-/etc/pykbroker/server.properties}"

subcommand=""
if [ "${1:-}" = "healthcheck" ]; then
    subcommand="healthcheck"
    shift
fi

case "${1:-}" in
    "" | -*)
        if [ -f "$config" ]; then
            set -- "$config" "$@"
        fi
        ;;
    *.properties) ;;
    *)
        if [ -z "$subcommand" ]; then
            exec "$@"
        fi
        ;;
esac

if [ -n "$subcommand" ]; then
    exec pykbroker healthcheck --from-env "$@"
fi
exec pykbroker --from-env "$@"
