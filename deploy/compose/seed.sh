#!/usr/bin/env bash
# Demo seeder (docker-compose.yml service `seeder`, run from the flowlogd image): writes the
# current hour's PT1H.json of one VNet flow log and one NSG (v2) flow log into Azurite in
# Azure's block layout with `flowlogd gen --upload`, then appends one record block every
# $SEED_INTERVAL, like Azure does. Runs until stopped; a writer that fails (Azurite not
# listening yet) is restarted after a pause.
set -euo pipefail

: "${AZURE_STORAGE_CONNECTION_STRING:?must hold the Azurite connection string}"
endpoint=${SEED_BLOB_ENDPOINT:-http://azurite:10000/devstoreaccount1}
interval=${SEED_INTERVAL:-60s}

# kind container seed
seed() {
    local kind=$1 container=$2 seed=$3
    while true; do
        echo "seed: $kind -> $endpoint/$container (seed $seed, one record every $interval)" >&2
        flowlogd gen --upload \
            --blob-endpoint "$endpoint" \
            --connection-string-env AZURE_STORAGE_CONNECTION_STRING \
            --container "$container" \
            --kind "$kind" \
            --seed "$seed" \
            --follow "$interval" \
            && return 0
        echo "seed: $kind writer stopped with status $?; restarting in 5s" >&2
        sleep 5
    done
}

trap 'trap - TERM INT; kill 0; exit 143' TERM INT
seed vnet insights-logs-flowlogflowevent 1 &
seed nsg2 insights-logs-networksecuritygroupflowevent 2 &
wait
