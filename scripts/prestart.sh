#!/usr/bin/env sh
# Bring the database schema to head before the API or workers start (STYLE rule 11: migrations run
# in a prestart step, never at import). docker-compose runs `safetune migrate` as its own one-shot
# service; use this script where there is no such ordering (an init container, a plain VM), since it
# also waits for a database that is still starting.
set -eu

attempts="${SAFETUNE_PRESTART_ATTEMPTS:-30}"
delay="${SAFETUNE_PRESTART_DELAY:-2}"
i=1
until safetune migrate; do
    if [ "$i" -ge "$attempts" ]; then
        echo "prestart: migrations failed after $attempts attempts" >&2
        exit 1
    fi
    echo "prestart: database not ready (attempt $i/$attempts); retrying in ${delay}s" >&2
    i=$((i + 1))
    sleep "$delay"
done
