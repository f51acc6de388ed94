#!/bin/bash
# A zetian cluster to try in one command: three zetian-milter nodes in one cluster,
# each behind its own throwaway Postfix on loopback, all relaying to one smtp-sink,
# with one cluster-wide limit (5 messages a minute per sender) that holds whichever
# node a message goes through. It prints how to send mail through the nodes and how to
# watch the shared limit with zetianctl, then runs until Ctrl-C, which stops every
# process it started and removes its temp folder.
#
#   sudo contrib/demo/cluster.sh                  # binaries from ./build
#   sudo contrib/demo/cluster.sh --installed      # zetian-milter and zetianctl from PATH
#   sudo contrib/demo/cluster.sh --base-port 13500
#
# Why root: Postfix's master starts as root (it drops to the postfix user itself).
# Nothing outside the temp folder is touched: no /etc/postfix change, no system Postfix
# restart, no postmulti. Everything listens on 127.0.0.1 only.
#
# Ports: BASE (default 12500) is the smtp-sink, BASE+1..3 the three Postfix smtpd,
# BASE+4..6 the three milters, BASE+7..9 the three cluster listeners.
#
# Shutdown order on Ctrl-C: Postfix first (no new mail reaches a stopping milter),
# then the milters, then the sink; every process is waited for (SIGKILL after a
# deadline) before the temp folder goes. A node killed by hand while the demo runs (to
# watch the others fail it) is reported once and the demo keeps running.

set -u -o pipefail

PROG=contrib/demo/cluster.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODES=(n1 n2 n3)
RULE=per-sender
LIMIT=5
PERIOD=1m
SBIN_PATH=/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin:/bin

usage() {
    cat <<EOF
Usage: $PROG [--build-dir DIR | --installed] [--base-port N]

Starts three zetian-milter nodes in one cluster, each behind its own Postfix on
127.0.0.1, with a shared limit of $LIMIT messages per $PERIOD per sender; Ctrl-C stops
everything and removes the temp folder. Run it as root (Postfix needs it).

  --build-dir DIR  take zetian-milter and zetianctl from the build folder DIR
                   (default: $REPO/build)
  --installed      take the installed zetian-milter and zetianctl (PATH, /usr/sbin,
                   /usr/local/sbin)
  --base-port N    use TCP ports N..N+9 on 127.0.0.1 (default 12500): N the
                   smtp-sink, N+1..N+3 SMTP, N+4..N+6 milters, N+7..N+9 cluster
  -h, --help       this help

ZETIAN_MILTER and ZETIAN_CTL, when set, name the two binaries (they win over both
options). Needs: postfix (with smtp-sink), and swaks for the example commands.
EOF
}

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

# --------------------------------------------------------------------------- options

BUILD_DIR=$REPO/build
INSTALLED=0
BASE_PORT=12500
while [ $# -gt 0 ]; do
    case $1 in
        --build-dir) [ $# -ge 2 ] || die "--build-dir needs a folder"; BUILD_DIR=$2; shift 2 ;;
        --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
        --installed) INSTALLED=1; shift ;;
        --base-port) [ $# -ge 2 ] || die "--base-port needs a number"; BASE_PORT=$2; shift 2 ;;
        --base-port=*) BASE_PORT=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
case $BASE_PORT in
    ''|*[!0-9]*) die "--base-port must be a number, not '$BASE_PORT'" ;;
esac
if [ "$BASE_PORT" -lt 1024 ] || [ "$BASE_PORT" -gt 65526 ]; then
    die "--base-port must be between 1024 and 65526 (it uses N..N+9), not $BASE_PORT"
fi

# --------------------------------------------------------------------------- what it needs

if [ "$(id -u)" != 0 ]; then
    die "run it as root: each node's Postfix master starts as root (it drops to the postfix user itself).
    sudo $0 $*"
fi

POSTFIX=$(PATH=$SBIN_PATH command -v postfix || true)
SMTP_SINK=$(PATH=$SBIN_PATH command -v smtp-sink || true)
if [ -z "$POSTFIX" ] || [ -z "$SMTP_SINK" ]; then
    die "Postfix is not installed (the demo runs three private instances of it and its smtp-sink,
    without touching the system's Postfix):
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
fi
if ! getent passwd postfix >/dev/null; then
    die "there is no 'postfix' user: reinstall the postfix package"
fi
SWAKS=$(command -v swaks || true)

if [ -n "${ZETIAN_MILTER:-}" ]; then
    MILTER=$ZETIAN_MILTER
elif [ "$INSTALLED" = 1 ]; then
    MILTER=$(PATH=$PATH:$SBIN_PATH command -v zetian-milter || true)
    [ -n "$MILTER" ] || die "no installed zetian-milter in PATH, /usr/sbin or /usr/local/sbin:
    install it (cmake --install build), or run from a build folder without --installed"
else
    MILTER=$BUILD_DIR/milter/zetian-milter
fi
if [ -n "${ZETIAN_CTL:-}" ]; then
    CTL=$ZETIAN_CTL
elif [ "$INSTALLED" = 1 ]; then
    CTL=$(PATH=$PATH:$SBIN_PATH command -v zetianctl || true)
    [ -n "$CTL" ] || die "zetian-milter is installed but zetianctl is not (both come from the same build)"
else
    CTL=$BUILD_DIR/milter/zetianctl
fi
for bin in "$MILTER" "$CTL"; do
    if [ ! -x "$bin" ]; then
        die "$bin is not built. Build both binaries first:
    cmake -G Ninja -S $REPO -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release
    cmake --build $BUILD_DIR --target zetian-milter zetianctl
or use installed ones (--installed), or name them with ZETIAN_MILTER and ZETIAN_CTL."
    fi
done

SINK_PORT=$BASE_PORT
SMTP_PORTS=($((BASE_PORT + 1)) $((BASE_PORT + 2)) $((BASE_PORT + 3)))
MILTER_PORTS=($((BASE_PORT + 4)) $((BASE_PORT + 5)) $((BASE_PORT + 6)))
CLUSTER_PORTS=($((BASE_PORT + 7)) $((BASE_PORT + 8)) $((BASE_PORT + 9)))

# A port something already listens on would make one process fail later with a less
# clear message; say it here. (ss comes with iproute2; without it, try to connect.)
port_taken() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
for port in "$SINK_PORT" "${SMTP_PORTS[@]}" "${MILTER_PORTS[@]}" "${CLUSTER_PORTS[@]}"; do
    if port_taken "$port"; then
        die "TCP port $port is in use; the demo needs $BASE_PORT..$((BASE_PORT + 9)) free:
    choose others with --base-port N"
    fi
done

# --------------------------------------------------------------------------- stopping

DEMO_DIR=""
SINK_PID=""
declare -A MILTER_PID=() MASTER_PID=() REPORTED=()
STOPPING=0
STOP_FAILED=0

pid_alive() {
    # A zombie is dead for our purpose; only its parent (us) can reap it.
    local state
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Live processes whose session id is $1 (Postfix's master is a session leader, and its
# children stay in its session).
session_pids() {
    ps -o pid=,stat= -s "$1" | awk '$2 !~ /^Z/ { print $1 }'
}

# Waits up to $2 tenths of a second for the shell function/command $1 to succeed.
wait_for() {
    local check=$1 tenths=$2 i
    for ((i = 0; i < tenths; i++)); do
        eval "$check" && return 0
        sleep 0.1
    done
    eval "$check"
}

stop_postfix() {
    local node=$1 dir=$DEMO_DIR/$1/postfix pid
    pid=${MASTER_PID[$node]:-}
    [ -n "$pid" ] || pid=$(awk '{ print $1; exit }' "$dir/queue/pid/master.pid" 2>/dev/null)
    [ -n "$pid" ] || return 0
    if pid_alive "$pid"; then
        "$POSTFIX" -c "$dir/etc" stop >/dev/null 2>&1
    fi
    if ! wait_for "[ -z \"\$(session_pids $pid)\" ]" 150; then
        echo "zetian demo: $node's Postfix did not stop within 15 s: killed" >&2
        session_pids "$pid" | xargs -r kill -KILL 2>/dev/null
        wait_for "[ -z \"\$(session_pids $pid)\" ]" 50
        return 1
    fi
}

stop_milter() {
    local node=$1 i=$2 pid=${MILTER_PID[$1]:-} status
    [ -n "$pid" ] || return 0
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        # libmilter looks at its stop flag only when its listener's poll() returns,
        # every 5 s unless a connection arrives: connect once so it stops at once.
        (exec 3<>"/dev/tcp/127.0.0.1/${MILTER_PORTS[$i]}") 2>/dev/null
        if ! wait_for "! pid_alive $pid" 150; then
            echo "zetian demo: $node's zetian-milter did not stop within 15 s of SIGTERM: killed" >&2
            kill -KILL "$pid" 2>/dev/null
            STOP_FAILED=1
        fi
    fi
    wait "$pid" 2>/dev/null
    status=$?
    # 0: stopped by us; a status already reported while running is not news.
    if [ "$status" != 0 ] && [ -z "${REPORTED[$node]:-}" ]; then
        echo "zetian demo: $node's zetian-milter exited with status $status" >&2
        STOP_FAILED=1
    fi
}

stop_all() {
    local i node
    [ "$STOPPING" = 1 ] && return
    STOPPING=1
    # A second Ctrl-C must not cut the clean-up short and leave processes behind.
    trap '' INT TERM HUP
    [ -n "$DEMO_DIR" ] || return
    echo
    echo "zetian demo: stopping"
    for node in "${NODES[@]}"; do stop_postfix "$node" & done
    wait_postfix_stops
    for i in "${!NODES[@]}"; do stop_milter "${NODES[$i]}" "$i"; done
    if [ -n "$SINK_PID" ]; then
        kill -TERM "$SINK_PID" 2>/dev/null
        wait_for "! pid_alive $SINK_PID" 50 || kill -KILL "$SINK_PID" 2>/dev/null
        wait "$SINK_PID" 2>/dev/null
    fi
    rm -rf -- "$DEMO_DIR"
    if [ "$STOP_FAILED" = 1 ]; then
        echo "zetian demo: stopped, with the problems above; $DEMO_DIR removed"
    else
        echo "zetian demo: stopped; $DEMO_DIR removed"
    fi
}

# The Postfix stops run in parallel subshells (each waits for its master's session to
# empty); their own failures are reported by them.
wait_postfix_stops() {
    local job
    for job in $(jobs -p); do
        case " $SINK_PID ${MILTER_PID[*]} " in
            *" $job "*) ;;
            *) wait "$job" || STOP_FAILED=1 ;;
        esac
    done
}

on_exit() {
    local status=$?
    stop_all
    [ "$STOP_FAILED" = 1 ] && status=1
    exit "$status"
}
trap on_exit EXIT
trap 'exit 0' INT TERM HUP

fail_start() {
    echo "$PROG: $*" >&2
    exit 1
}

# --------------------------------------------------------------------------- the temp folder

DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zetian-demo.XXXXXX") || die "cannot create a temp folder"
# Postfix's daemons (as the postfix user) walk down to their queue folders.
chmod 755 "$DEMO_DIR"
if [ ${#DEMO_DIR} -gt 80 ]; then
    fail_start "the temp folder's path $DEMO_DIR is too long for Unix socket paths (108 bytes): set TMPDIR to a shorter folder"
fi

# The cluster's shared secret: 32 random bytes as hex, readable by root only.
SECRET=$DEMO_DIR/cluster.secret
(umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$SECRET" && echo >>"$SECRET") \
    || fail_start "cannot write $SECRET"

# --------------------------------------------------------------------------- smtp-sink

mkdir -p "$DEMO_DIR/sink"
chown postfix: "$DEMO_DIR/sink"
# The long-running children get process groups of their own (set -m), so a terminal's
# Ctrl-C reaches this script alone, which then stops them in order (Postfix before the
# milters). They stay in this session. Job control is off again once they run: bash
# would otherwise print a line for every job it reaps.
set -m
# -d: one file per delivered message, so what got through can be read afterwards.
"$SMTP_SINK" -4 -u postfix -h sink.demo.zetian -m 256 -d "$DEMO_DIR/sink/msg." \
    "127.0.0.1:$SINK_PORT" 256 >"$DEMO_DIR/sink.log" 2>&1 &
SINK_PID=$!
set +m

# --------------------------------------------------------------------------- the nodes

write_milter_config() {
    local i=$1 node=${NODES[$1]} dir=$DEMO_DIR/${NODES[$1]} j seeds=""
    for j in "${!NODES[@]}"; do
        [ "$j" = "$i" ] && continue
        seeds+="${seeds:+, }\"127.0.0.1:${CLUSTER_PORTS[$j]}\""
    done
    mkdir -p "$dir/state"
    cat >"$dir/zetian.toml" <<EOF
# Node $node of the zetian demo ($PROG).

[node]
id = "$node"
state_dir = "$dir/state"

[milter]
socket = "inet:${MILTER_PORTS[$i]}@127.0.0.1"

[health]
socket = "$dir/health.sock"

[log]
level = "info"          # one line per refusal
target = "stderr"       # the demo writes it to $dir/zetian.log

[cluster]
enabled = true
bind = "127.0.0.1:${CLUSTER_PORTS[$i]}"
seeds = [$seeds]
shared_secret_file = "$SECRET"
bootstrap_expect = 3    # one Raft-replicated policy: zetianctl policy apply on any node
heartbeat_interval = "500ms"
failure_detection_timeout = "3s"   # kill a node and watch the others fail it quickly

[ratelimit]
exempt = []             # the default exempts loopback, where every demo client is

[[ratelimit.rule]]
name = "$RULE"
key = "sender"
limit = $LIMIT
period = "$PERIOD"      # token bucket: $LIMIT at once, then one more every $((60 / LIMIT)) s
scope = "cluster"       # counted once across the three nodes
action = "tempfail"     # 451 4.7.1
EOF
}

write_postfix_config() {
    local i=$1 dir=$DEMO_DIR/${NODES[$1]}/postfix
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chmod 755 "$dir" "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix: "$dir/data"
    cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/mail.log
maillog_file_prefixes = $DEMO_DIR
syslog_name = postfix-zetian-demo-${NODES[$i]}
myhostname = ${NODES[$i]}.demo.zetian
mydomain = demo.zetian
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_banner = \$myhostname ESMTP zetian demo node ${NODES[$i]}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_error_sleep_time = 0
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
biff = no
append_dot_mydomain = no
readme_directory = no
smtputf8_enable = no
smtpd_milters = inet:127.0.0.1:${MILTER_PORTS[$i]}
non_smtpd_milters =
milter_protocol = 6
milter_default_action = accept
EOF
    # Every service unchrooted: the queue folder is no chroot jail.
    cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:${SMTP_PORTS[$i]} inet n - n - 20 smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    # Postfix re-reads a config file whose mtime is not yet in the past (a guard
    # against half-written files), which costs seconds at start: back-date both.
    touch -d '-10 seconds' "$dir/etc/main.cf" "$dir/etc/master.cf"
}

for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    write_milter_config "$i"
    set -m
    "$MILTER" -c "$DEMO_DIR/$node/zetian.toml" >"$DEMO_DIR/$node/zetian.log" 2>&1 &
    MILTER_PID[$node]=$!
    set +m
done

for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    write_postfix_config "$i"
    dir=$DEMO_DIR/$node/postfix
    if ! out=$("$POSTFIX" -c "$dir/etc" start 2>&1); then
        fail_start "$node's Postfix did not start:
$out
$(tail -n 20 "$dir/mail.log" 2>/dev/null)"
    fi
    MASTER_PID[$node]=$(awk '{ print $1; exit }' "$dir/queue/pid/master.pid" 2>/dev/null)
    [ -n "${MASTER_PID[$node]}" ] || fail_start "$node's Postfix left no master.pid"
done

# --------------------------------------------------------------------------- ready?

listening() {
    [ -n "$(ss -Hltn "src 127.0.0.1:$1" 2>/dev/null)" ]
}
if ! command -v ss >/dev/null; then
    listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fi

# Ready when every node takes mail, sees all three active and knows the Raft leader
# (its first policy is committed), every Postfix listens, and the sink answers.
node_ready() {
    local i=$1 sock=$DEMO_DIR/${NODES[$1]}/health.sock
    [ -S "$sock" ] || return 1
    "$CTL" -s "$sock" --timeout 2 members 2>/dev/null \
        | awk '$4 == "active" { n++ } END { exit !(n == 3) }' || return 1
    "$CTL" -s "$sock" --timeout 2 --json health 2>/dev/null | grep -q '"leader": *"n[0-9]"' || return 1
    listening "${MILTER_PORTS[$i]}"
}

deadline=$((SECONDS + 60))
for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    until node_ready "$i"; do
        pid_alive "${MILTER_PID[$node]}" \
            || fail_start "$node's zetian-milter exited at start; its log:
$(tail -n 30 "$DEMO_DIR/$node/zetian.log")"
        [ "$SECONDS" -lt "$deadline" ] \
            || fail_start "$node did not see the other two nodes and a Raft leader within 60 s; its log:
$(tail -n 30 "$DEMO_DIR/$node/zetian.log")"
        sleep 0.2
    done
    until listening "${SMTP_PORTS[$i]}"; do
        [ "$SECONDS" -lt "$deadline" ] || fail_start "$node's Postfix does not listen on ${SMTP_PORTS[$i]}:
$(tail -n 20 "$DEMO_DIR/$node/postfix/mail.log" 2>/dev/null)"
        sleep 0.2
    done
done
until listening "$SINK_PORT"; do
    pid_alive "$SINK_PID" || fail_start "smtp-sink exited at start: $(cat "$DEMO_DIR/sink.log")"
    [ "$SECONDS" -lt "$deadline" ] || fail_start "smtp-sink does not listen on $SINK_PORT"
    sleep 0.2
done

# --------------------------------------------------------------------------- how to use it

sock() { printf '%s/%s/health.sock' "$DEMO_DIR" "$1"; }

cat <<EOF
zetian demo: three nodes in one cluster, each behind its own Postfix, relaying to one
smtp-sink. Everything is under $DEMO_DIR.

  node  SMTP (Postfix)    milter            cluster           zetian-milter pid
EOF
for i in "${!NODES[@]}"; do
    node=${NODES[$i]}
    printf '  %-4s  127.0.0.1:%-7s 127.0.0.1:%-7s 127.0.0.1:%-7s %s\n' "$node" \
        "${SMTP_PORTS[$i]}" "${MILTER_PORTS[$i]}" "${CLUSTER_PORTS[$i]}" "${MILTER_PID[$node]}"
done
cat <<EOF

The shared limit: rule "$RULE", $LIMIT messages per $PERIOD per sender (a token bucket:
$LIMIT at once, then one more every $((60 / LIMIT)) s), counted once across the three
nodes: the 6th message of a sender gets "451 4.7.1" whichever node it goes through.

Send mail through each node:
EOF
for i in "${!NODES[@]}"; do
    echo "  swaks --server 127.0.0.1:${SMTP_PORTS[$i]} --from alice@example.org --to bob@example.net"
done
cat <<EOF
or seven in a row, round-robin over the three (the last two are refused):
  for i in 1 2 3 4 5 6 7; do swaks --server 127.0.0.1:\$(( $((BASE_PORT + 1)) + i % 3 )) --from alice@example.org --to bob@example.net --silent 2 && echo "message \$i accepted"; done
EOF
if [ -z "$SWAKS" ]; then
    echo "  (swaks is not installed: apt-get install swaks; any SMTP client will do)"
fi
cat <<EOF

Watch the shared limit with zetianctl (each node has its own health socket):
  $CTL -s $(sock n1) status        # the node, the cluster, the Raft leader
  $CTL -s $(sock n2) members       # the three nodes: state, load, keys owned
  for n in ${NODES[*]}; do $CTL -s $DEMO_DIR/\$n/health.sock limits show --rule $RULE; done
      # a sender's counter is kept by the node that owns the key and one replica;
      # the third node asks the owner and holds nothing ("no counters match")
  $CTL -s $(sock n1) policy get > policy.toml    # the policy, replicated by Raft:
  $CTL -s $(sock n3) policy apply policy.toml    # edit the limit, apply it on any node

Try: kill ${MILTER_PID[n2]} (n2's zetian-milter): the others see it failed within seconds and the
limit still holds through n1 and n3 (n2's Postfix accepts while its milter is down:
milter_default_action = accept).

Logs: $DEMO_DIR/n1/zetian.log (one line per refusal), $DEMO_DIR/n1/postfix/mail.log;
delivered mail: $DEMO_DIR/sink/ (one file per message).

zetian demo: ready; Ctrl-C (or kill $$) stops everything and removes $DEMO_DIR
EOF

# --------------------------------------------------------------------------- until Ctrl-C

while :; do
    # A background sleep and `wait`: a trapped signal ends `wait` at once.
    sleep 2 &
    wait $! 2>/dev/null
    for node in "${NODES[@]}"; do
        pid=${MILTER_PID[$node]}
        if [ -z "${REPORTED[$node]:-}" ] && ! pid_alive "$pid"; then
            wait "$pid" 2>/dev/null
            echo "zetian demo: $node's zetian-milter (pid $pid) exited with status $?; its log: $DEMO_DIR/$node/zetian.log"
            REPORTED[$node]=1
        fi
    done
done
