#!/usr/bin/env bash
# Demo: builds and installs logical_audit, starts a throw-away PostgreSQL 15 with wal_level=logical,
# makes changes of every kind and prints them through the SQL decoder logical_audit.pgoutput_to_jsonb.
# Run as root on Debian 12; installs what it needs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/scripts/lib.sh"
PORT=${PORT:-54329}

install_packages
work=$(make_work_copy "$here")
install_extension "$work"

data="$work/demo-data"
as_postgres "initdb -D '$data' -A trust >/dev/null && cat >> '$data/postgresql.conf' <<CONF
wal_level = logical
port = $PORT
unix_socket_directories = '$work'
listen_addresses = ''
CONF
pg_ctl -D '$data' -l '$work/demo.log' -w start >/dev/null"
trap "as_postgres \"pg_ctl -D '$data' -m fast stop >/dev/null\"; rm -rf '$work'" EXIT

as_postgres "psql -X -q -h '$work' -p $PORT -d postgres -v ON_ERROR_STOP=1" <<'SQL'
CREATE EXTENSION logical_audit;
CREATE TYPE mood AS ENUM ('calm', 'angry');
CREATE TABLE account (id int PRIMARY KEY, owner text, balance numeric, mood mood, tags text[]);
CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, amount numeric);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE PUBLICATION demo_pub FOR TABLE account, ledger;
SELECT 'slot created at ' || lsn FROM pg_create_logical_replication_slot('demo', 'pgoutput');

INSERT INTO account VALUES (1, 'alice', 100, 'calm', '{vip}'), (2, 'bob', 50, NULL, '{}');
BEGIN;
SELECT 'emitted' FROM pg_logical_emit_message(true, 'audit', '{"user": "carol", "reason": "refund"}');
UPDATE account SET balance = balance + 10, mood = 'angry' WHERE id = 2;
INSERT INTO ledger (account, amount) VALUES (2, 10);
COMMIT;
UPDATE ledger SET amount = 12;
DELETE FROM account WHERE id = 1;
TRUNCATE ledger RESTART IDENTITY;

\echo
\echo '== every message, decoded by logical_audit.pgoutput_to_jsonb (slot LSN, message)'
\pset format unaligned
\pset fieldsep '  '
\pset tuples_only on
SELECT lsn, logical_audit.pgoutput_to_jsonb(data) AS message
  FROM pg_logical_slot_get_binary_changes('demo', NULL, NULL, 'proto_version', '1',
       'publication_names', 'demo_pub', 'messages', 'true');
SQL
