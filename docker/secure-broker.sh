#!/bin/sh
# The compose `secure` profile's broker: makes its TLS certificates on first start, then runs
# the image's entrypoint (which execs the broker as PID 1).
#
# In the data volume's certs/ (the broker's user only): a CA made here, whose private key is
# deleted once it has signed the broker's certificate (nothing else is ever signed with it),
# ca.crt (what clients trust: `docker compose exec broker-secure cat certs/ca.crt > ca.crt`)
# and broker.pem (the broker's key and certificate chain, ssl.keystore.location).
set -eu

dir=/var/lib/pykbroker/certs
if [ ! -s "$dir/broker.pem" ]; then
    umask 077
    mkdir -p "$dir"
    work=$(mktemp -d)
    days="${PYKBROKER_CERT_DAYS:-365}"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
        -subj "/CN=pykbroker secure profile CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$work/broker.key" -out "$work/broker.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' \
        "${PYKBROKER_CERT_SAN:-DNS:localhost,DNS:broker-secure,IP:127.0.0.1}" > "$work/ext.cnf"
    openssl x509 -req -in "$work/broker.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
        -CAcreateserial -days "$days" -extfile "$work/ext.cnf" -out "$work/broker.crt" 2>/dev/null
    cat "$work/broker.key" "$work/broker.crt" "$work/ca.crt" > "$dir/broker.pem.tmp"
    cp "$work/ca.crt" "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
    mv "$dir/broker.pem.tmp" "$dir/broker.pem"
    rm -rf "$work"
    echo "secure-broker: made a CA and the broker's certificate in $dir" >&2
fi
exec docker-entrypoint.sh "$@"
