#!/bin/sh
# make_test_certs.sh DIR: the throw-away PKI the cluster TLS tests use.
#
# Creates in DIR (all keys EC P-256, unencrypted):
#   ca.crt/ca.key              the cluster CA
#   node1..3.crt/.key          CN node1..node3, signed by ca, valid 10 years
#   other-ca.crt/.key          a second, unrelated CA
#   rogue.crt/.key             CN rogue, signed by other-ca (a stranger to the cluster)
#   expired.crt/.key           CN expired, signed by ca, valid 2020-01-01..2021-01-01
# Leaf certificates carry extendedKeyUsage serverAuth,clientAuth: every node both
# accepts and initiates links, and OpenSSL checks the purpose of the peer's
# certificate on each side.
#
# Idempotent and safe to run concurrently on the same DIR: an existing complete set is
# kept as is (a marker file is written last); otherwise a fresh set is made in a work
# folder under DIR and moved into place while holding a lock (flock, when installed).
# Quiet on success; on failure prints the failing command and openssl's output to
# stderr and exits non-zero.
#
# Needs the openssl CLI (tested with 3.0), od and mktemp. `openssl x509 -req` before
# 3.4 can only start a certificate now (-days), so the expired certificate comes from
# `openssl ca`, whose -startdate/-enddate take any dates, with a minimal database in
# the work folder. No faketime, no system openssl.cnf (OPENSSL_CONF points at ours).
set -eu

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
files="ca.crt ca.key node1.crt node1.key node2.crt node2.key node3.crt node3.key
       other-ca.crt other-ca.key rogue.crt rogue.key expired.crt expired.key"
marker=.make_test_certs.complete

set_is_complete() {
  [ -f "$dir/$marker" ] || return 1
  for f in $files; do
    [ -s "$dir/$f" ] || return 1
  done
}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)  # absolute: the work below happens in another folder
if set_is_complete; then
  exit 0
fi

if command -v flock >/dev/null 2>&1; then
  exec 9>"$dir/.make_test_certs.lock"
  flock 9
  if set_is_complete; then
    exit 0
  fi
fi

work=$(mktemp -d "$dir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/openssl.log

run() {
  if ! "$@" >>"$log" 2>&1; then
    echo "make_test_certs.sh: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

cat >"$work/openssl.cnf" <<'CNF'
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
[ca_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[node_ext]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = backdating_ca
[backdating_ca]
database = db/index.txt
new_certs_dir = db
serial = db/serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
x509_extensions = node_ext
[any_name]
commonName = supplied
CNF
OPENSSL_CONF=$work/openssl.cnf
export OPENSSL_CONF
cd "$work"

new_key() {
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"
}

new_ca() {  # NAME CN
  new_key "$1"
  run openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 3650 -sha256 \
    -subj "/CN=$2" -extensions ca_ext
}

new_leaf() {  # NAME ISSUER
  new_key "$1"
  run openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1"
  serial=0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
  run openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -set_serial "$serial" \
    -days 3650 -sha256 -extfile openssl.cnf -extensions node_ext -out "$1.crt"
}

new_ca ca "zetian test cluster CA"
new_ca other-ca "zetian test other CA"
new_leaf node1 ca
new_leaf node2 ca
new_leaf node3 ca
new_leaf rogue other-ca

new_key expired
run openssl req -new -key expired.key -out expired.csr -subj "/CN=expired"
mkdir db
: >db/index.txt
run openssl ca -batch -notext -rand_serial -cert ca.crt -keyfile ca.key -in expired.csr \
  -out expired.crt -startdate 20200101000000Z -enddate 20210101000000Z

rm -f "$dir/$marker"
for f in $files; do
  mv -f "$f" "$dir/$f"
done
: >"$dir/$marker"
