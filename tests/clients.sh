#!/usr/bin/env bash
# Published ActiveCampaign client libraries, unchanged, through the release binary against a
# local HTTPS stand-in for the API (examples/stand_in_upstream.rs): PyPI activecampaign-python
# (requests) and mcp-activecampaign (httpx), at the versions tests/clients-requirements.txt
# pins, installed into target/clients-venv. tests/clients.py says what each must see.
#
# Usage: tests/clients.sh   (CLIENTS_VENV to use another venv)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CLIENTS_VENV:-target/clients-venv}
stamp="$venv/.installed-$(sha256sum tests/clients-requirements.txt | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # Wheels only, each checked against its pinned hash: no package's own build code runs.
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
        --require-hashes --only-binary=:all: -r tests/clients-requirements.txt
    touch "$stamp"
fi
# shellcheck source=support/gateway.sh
. tests/support/gateway.sh
start_gateway

status=0
"$venv/bin/python" tests/clients.py "http://$listen" "$work/audit.jsonl" || status=$?
if token_leaked "client libraries run"; then
    status=1
fi
exit "$status"
