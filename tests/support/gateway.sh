# Sourced by the scripts that drive the release binary from outside (tests/schemathesis.sh,
# tests/clients.sh): starts the local HTTPS stand-in upstream (examples/stand_in_upstream.rs)
# and specgate in front of it, with a fresh random token.
#
# After `start_gateway`: $listen is the gateway's host:port, $work a scratch directory holding
# gateway.log and audit.jsonl, $token the stored token. Both processes are stopped, and $work
# removed, when the sourcing script exits.

work=$(mktemp -d)
cleanup() {
    [ -n "${GW_PID:-}" ] && kill "$GW_PID" 2>/dev/null || true
    [ -n "${UP_PID:-}" ] && kill "$UP_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

token="st-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$token" > "$work/token"

start_gateway() {
    cargo build --release --locked --quiet --bin specgate --example stand_in_upstream
    # Both children write to pipes this script reads from process substitutions (not coprocs:
    # bash closes a coproc's descriptors in background subshells, and a pipe nobody drains
    # fills up and stalls the writer).
    # The stand-in prints {"port": N} once it accepts connections.
    exec 4< <(STAND_IN_TOKEN="$token" exec target/release/examples/stand_in_upstream "$work")
    UP_PID=$!
    local line port
    read -r -t 60 line <&4 || { echo "the stand-in upstream did not start" >&2; exit 1; }
    port=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
    cat <&4 > /dev/null &

    # The gateway logs "specgate ready" with its address once it accepts connections.
    exec 3< <(
        SPECGATE_UPSTREAM="https://localhost:$port/api/3" \
        SPECGATE_UPSTREAM_CA="$work/ca.pem" \
        SPECGATE_API_TOKEN_FILE="$work/token" \
        SPECGATE_AUDIT_LOG="$work/audit.jsonl" \
        SPECGATE_LISTEN=127.0.0.1:0 SPECGATE_ADMIN_LISTEN=127.0.0.1:0 \
        SPECGATE_LOG_FORMAT=json RUST_LOG=info \
        exec target/release/specgate serve 2>&1
    )
    GW_PID=$!
    listen=
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ] && read -r -t 60 line <&3; do
        echo "$line" >> "$work/gateway.log"
        case "$line" in
            *'"specgate ready"'*)
                listen=$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])')
                break ;;
        esac
    done
    [ -n "$listen" ] || { echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 1; }
    # Keep draining the gateway's log, for the token search at the end.
    cat <&3 >> "$work/gateway.log" &
    DRAIN_PID=$!
}

# Stops the gateway and waits until its last log line is written; then says (returns 0)
# whether the stored token appears in its logs or audit log.
token_leaked() {
    kill "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    wait "$DRAIN_PID" 2>/dev/null || true
    if grep -q "$token" "$work/gateway.log" "$work/audit.jsonl" 2>/dev/null; then
        echo "$1: the token appeared in the gateway's logs or audit log" >&2
        return 0
    fi
    return 1
}
