# A prepared transaction's spool file carries the shape of every relation it touches: its COMMIT
# PREPARED may arrive in a later session (after stop() and start(), or a restart of the
# downstream), whose upstream never announces again the relations it announced before the
# PREPARE. A Relation message that comes inside a prepared transaction, streamed or not, is also
# learnt at once: the upstream counts it as sent and does not repeat it for the changes that follow.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/lib";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use AuditTest;

my $up = new_upstream('upstream', conf => ['max_prepared_transactions = 10', 'logical_decoding_work_mem = 64kB']);
my $down = new_downstream('downstream');
# An enum column: in binary mode its values need the Type message to be read with the local type.
my $ddl = q{CREATE TYPE mood AS ENUM ('calm', 'happy'); CREATE TABLE t (id int PRIMARY KEY, m mood);};
$up->safe_psql('postgres', "$ddl CREATE TABLE u (id int PRIMARY KEY); CREATE TABLE w (id int PRIMARY KEY); CREATE PUBLICATION audit_pub FOR TABLE t, u, w;");
$down->safe_psql('postgres', 'CREATE TYPE mood AS ENUM (\'calm\', \'happy\')');
create_subscription($down, 'sub', $up, options => '{"two_phase": true, "binary": true}');

# Runs SQL upstream and waits until the downstream has audited up to there.
sub upstream_step { audited_step($up, $down, 'sub', @_) }

# The audited rows of a table, in audit order.
sub audited
{
	my ($table) = @_;
	return $down->safe_psql('postgres', qq{
		SELECT string_agg(new_row::text, ' ' ORDER BY commit_lsn, ordinal) FROM logical_audit.change
		WHERE table_name = '$table'});
}

# 1. t announced before the PREPARE; the COMMIT PREPARED comes after stop() and start().
upstream_step(q{INSERT INTO t VALUES (1, 'calm')});
upstream_step(q{BEGIN; INSERT INTO t VALUES (2, 'happy'); PREPARE TRANSACTION 'g1'});
upstream_step(q{INSERT INTO t VALUES (3, 'calm')});
$down->safe_psql('postgres', q{SELECT logical_audit.stop('sub'); SELECT logical_audit.start('sub')});
upstream_step(q{COMMIT PREPARED 'g1'; INSERT INTO t VALUES (4, 'happy')});
is(audited('t'), '{"m": "calm", "id": 1} {"m": "calm", "id": 3} {"m": "happy", "id": 2} {"m": "happy", "id": 4}',
	'after stop() and start(), the prepared transaction and the next one are audited once, in commit order');
is(status_field($down, 'sub', 'state'), 'streaming', 'and the worker streams');

# 2. The same across a SIGKILL of the downstream between PREPARE and COMMIT PREPARED.
upstream_step(q{BEGIN; INSERT INTO t VALUES (5, 'calm'); PREPARE TRANSACTION 'g2'});
kill_downstream($down, 'sub');
upstream_step(q{COMMIT PREPARED 'g2'});
like(audited('t'), qr/"id": 4\} \{"m": "calm", "id": 5\}$/, 'after a SIGKILL too');

# 3. u announced inside a prepared transaction, then changed by a later one of the same session.
upstream_step(q{BEGIN; INSERT INTO u VALUES (1); PREPARE TRANSACTION 'g3'});
upstream_step(q{INSERT INTO u VALUES (2)});
upstream_step(q{COMMIT PREPARED 'g3'});
is(audited('u'), '{"id": 2} {"id": 1}', 'a relation announced inside a prepared transaction is known to the next one');
# 4. w announced inside a large prepared transaction that arrives streamed (Stream Prepare).
my $error_time = status_field($down, 'sub', 'last_error_time');
upstream_step(q{BEGIN; INSERT INTO w SELECT generate_series(1, 5000); PREPARE TRANSACTION 'g4'});
upstream_step(q{INSERT INTO w VALUES (0)});
upstream_step(q{COMMIT PREPARED 'g4'});
is($down->safe_psql('postgres', q{SELECT count(*), min((new_row->>'id')::int) FROM logical_audit.change WHERE table_name = 'w'}),
	'5001|0', 'a relation announced inside a streamed prepared transaction is known to the next one');
is(status_field($down, 'sub', 'last_error_time'), $error_time, 'without an error on the way');
is($down->safe_psql('postgres', q{SELECT count(*) FROM logical_audit.transaction WHERE gid IS NOT NULL}), '4',
	'four prepared transactions recorded, each once');
poll_until($down, q{SELECT count(*) FROM pg_ls_dir('pg_logical_audit')}, '0', 'no spool file left', $down);
done_testing();
