#!/bin/sh
# The image's entrypoint. Arguments go to `mailnode`, so
#   docker compose run --rm -e MAILNODE_PASSWORD=... node-a user add alice
# runs `mailnode user add alice`; without arguments the node runs. A node that does not
# exist yet in $MAILNODE_HOME is created first with the options in $MAILNODE_INIT_ARGS
# (except for commands that make or fill a node themselves, or only print help).
set -eu
case "${1:-run}" in
    init|restore|quickstart|-h|--help|--version) ;;
    *)
        if [ ! -f "${MAILNODE_HOME:?MAILNODE_HOME must name the data directory}/mailnode.toml" ]; then
            # The options are words to split (no quoting inside): --host 0.0.0.0 ...
            # shellcheck disable=SC2086
            mailnode init ${MAILNODE_INIT_ARGS:-}
        fi
        ;;
esac
[ "$#" -gt 0 ] || set -- run
exec mailnode "$@"
