# A fake upstream for TAP tests: a forked child process that listens on 127.0.0.1 and speaks enough
# of the frontend/backend protocol v3 and of the replication protocol for the worker and for
# create_subscription: SSLRequest and GSSENCRequest (answered 'N'), StartupMessage (trust:
# AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery), simple Query messages
# (IDENTIFY_SYSTEM, the SELECTs connection.cpp sends, SET, CREATE_ / DROP_REPLICATION_SLOT,
# START_REPLICATION ... LOGICAL), then the CopyBoth stream of a script: XLogData and keepalive
# messages the test builds, sent again on every connection from the START_REPLICATION position as a
# real walsender would (a transaction whose commit LSN is before it is skipped). Standby status
# updates from the client are recorded. Any other query gets an ErrorResponse and is recorded.
#
# Everything the fake sees is appended to a log file, one line an event, which the test reads:
#	<connection> startup <key=value ...>
#	<connection> query <text>
#	<connection> start_replication <slot> <lsn>
#	<connection> status write=<lsn> flush=<lsn> apply=<lsn> reply=<0|1>
#	<connection> wait_flush <lsn> reached|timed_out
#	<connection> unknown_query <text>
#	<connection> close
#
# Only core modules; the child never returns into the test (POSIX::_exit), so it runs none of the
# test's END blocks, and it exits by itself when the test process goes away.
package FakeWalsender;

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

our @EXPORT_OK = qw(
  lsn
  lsn_text
  pg_now
  pgo_begin
  pgo_commit
  pgo_relation
  pgo_insert
  pgo_tuple
  xlogdata
  keepalive
);

# Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
my $POSTGRES_EPOCH_OFFSET = 946684800;

# Protocol codes of the messages a client sends without a type byte.
my $PROTOCOL_3 = 196608;
my $SSL_REQUEST = 80877103;
my $GSSENC_REQUEST = 80877104;
my $CANCEL_REQUEST = 80877102;

# Type oids of the columns of the results the fake returns.
my $TEXTOID = 25;
my $INT4OID = 23;

# ---- values ------------------------------------------------------------------------------------

# An LSN as an integer, from its text form X/X.
sub lsn
{
	my ($text) = @_;
	my ($hi, $lo) = $text =~ m{^([0-9A-Fa-f]+)/([0-9A-Fa-f]+)$}
	  or die "not an LSN: $text\n";
	return (hex($hi) << 32) | hex($lo);
}

# The text form X/X of an LSN given as an integer.
sub lsn_text
{
	my ($value) = @_;
	return sprintf('%X/%X', $value >> 32, $value & 0xFFFFFFFF);
}

# The current time as a PostgreSQL TimestampTz: microseconds since 2000-01-01 UTC.
sub pg_now
{
	return int((Time::HiRes::time() - $POSTGRES_EPOCH_OFFSET) * 1_000_000);
}

# ---- pgoutput messages (Logical Replication Message Formats, protocol version 1) ---------------

# Begin: final (commit) LSN, commit time, xid.
sub pgo_begin
{
	my ($final_lsn, $commit_time, $xid) = @_;
	return pack('a Q> q> N', 'B', $final_lsn, $commit_time, $xid);
}

# Commit: flags (0), commit LSN, end LSN, commit time.
sub pgo_commit
{
	my ($commit_lsn, $end_lsn, $commit_time) = @_;
	return pack('a C Q> Q> q>', 'C', 0, $commit_lsn, $end_lsn, $commit_time);
}

# Relation: id, namespace, name, replica identity ('d', 'n', 'f', 'i') and columns given as
# [flags, name, type oid, typmod] (flags 1: part of the key).
sub pgo_relation
{
	my ($relation_id, $nspname, $relname, $replica_identity, @columns) = @_;
	my $message = pack('a N Z* Z* a n', 'R', $relation_id, $nspname, $relname, $replica_identity,
		scalar @columns);
	$message .= pack('C Z* N l>', @$_) for @columns;
	return $message;
}

# TupleData from columns given as ['t', text], ['b', bytes], ['n'] or ['u'].
sub pgo_tuple
{
	my @columns = @_;
	my $tuple = pack('n', scalar @columns);
	for my $column (@columns)
	{
		my ($kind, $value) = @$column;
		$tuple .= $kind;
		$tuple .= pack('N/a*', $value) if $kind eq 't' || $kind eq 'b';
	}
	return $tuple;
}

# Insert of a new tuple (TupleData bytes, see pgo_tuple) into a relation.
sub pgo_insert
{
	my ($relation_id, $tuple) = @_;
	return pack('a N a', 'I', $relation_id, 'N') . $tuple;
}

# ---- script steps ------------------------------------------------------------------------------

# One XLogData message: WAL start, WAL end (default: the start) and the payload; its send time is
# taken when it is sent. commit_lsn => lsn makes it part of the transaction committed there: it is
# not sent to a client starting after that LSN.
sub xlogdata
{
	my ($wal_start, $payload, %params) = @_;
	return {
		type => 'xlogdata',
		wal_start => $wal_start,
		wal_end => $params{wal_end} // $wal_start,
		payload => $payload,
		commit_lsn => $params{commit_lsn},
	};
}

# A primary keepalive message: end of WAL and whether a reply is requested.
sub keepalive
{
	my ($wal_end, $reply_requested) = @_;
	return { type => 'keepalive', wal_end => $wal_end, reply => $reply_requested ? 1 : 0 };
}

# The steps of a whole transaction: Begin (at first_lsn), the messages given as [wal_start,
# payload] (a Relation message travels at 0/0 as PostgreSQL 15 sends it), Commit (at end_lsn). A
# client starting after its commit LSN does not get it.
sub transaction
{
	my ($class, %t) = @_;
	my $time = $t{commit_time} // pg_now();
	my @steps = (xlogdata($t{first_lsn}, pgo_begin($t{commit_lsn}, $time, $t{xid})));
	push @steps, xlogdata($_->[0], $_->[1]) for @{ $t{messages} };
	push @steps, xlogdata($t{end_lsn}, pgo_commit($t{commit_lsn}, $t{end_lsn}, $time));
	$_->{commit_lsn} = $t{commit_lsn} for @steps;
	return @steps;
}

# A step that holds the rest of the script until the client has confirmed (flush LSN of a standby
# status update) at least lsn, or for at most timeout seconds. Skipped by a client that starts at
# or after lsn.
sub wait_flush
{
	my ($class, $lsn, $timeout) = @_;
	return { type => 'wait_flush', lsn => $lsn, timeout => $timeout };
}

# ---- the parent's side -------------------------------------------------------------------------

# Starts the fake. Parameters:
#	script       => [steps]: what every START_REPLICATION gets (see xlogdata, keepalive,
#	                transaction, wait_flush)
#	log          => file the fake appends its events to (required)
#	publications => [names] that exist (default: none)
#	slot_plugin  => plugin of every slot the client asks about (default pgoutput; undef: no slot)
#	systemid, timeline, xlogpos (integer LSN), dbname => the IDENTIFY_SYSTEM row
#	keepalive_interval => seconds between keepalives once the script is sent (default 5)
sub new
{
	my ($class, %params) = @_;
	die "FakeWalsender: log is required\n" unless defined $params{log};
	my $self = bless {
		script => $params{script} // [],
		log => $params{log},
		publications => $params{publications} // [],
		slot_plugin => exists $params{slot_plugin} ? $params{slot_plugin} : 'pgoutput',
		systemid => $params{systemid} // '7300000000000000001',
		timeline => $params{timeline} // 1,
		xlogpos => $params{xlogpos} // 0,
		dbname => $params{dbname} // 'postgres',
		keepalive_interval => $params{keepalive_interval} // 5,
	}, $class;
	open(my $truncate, '>', $self->{log}) or die "FakeWalsender: cannot create $self->{log}: $!\n";
	close($truncate);
	my $listener = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp',
		Listen => 16,
		ReuseAddr => 1) or die "FakeWalsender: cannot listen: $@\n";
	$self->{port} = $listener->sockport;
	$self->{parent} = $$;
	my $pid = fork();
	die "FakeWalsender: fork failed: $!\n" unless defined $pid;
	if ($pid == 0)
	{
		my $rc = 0;
		eval { $self->serve($listener); 1 } or do
		{
			$rc = 1;
			eval { $self->record(0, 'died', $@ // 'unknown error') };
		};
		POSIX::_exit($rc);
	}
	close($listener);
	$self->{pid} = $pid;
	return $self;
}

sub port
{
	my ($self) = @_;
	return $self->{port};
}

# A conninfo that reaches the fake.
sub conninfo
{
	my ($self, %params) = @_;
	return sprintf('host=127.0.0.1 port=%d dbname=%s user=%s', $self->{port},
		$params{dbname} // $self->{dbname}, $params{user} // 'auditor');
}

# Stops the child process.
sub stop
{
	my ($self) = @_;
	return unless $self->{pid} && $$ == $self->{parent};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	delete $self->{pid};
	return;
}

sub DESTROY
{
	my ($self) = @_;
	$self->stop;
}

# The events logged so far, as [connection, event, rest of the line].
sub events
{
	my ($self) = @_;
	open(my $fh, '<', $self->{log}) or return ();
	my @events;
	while (my $line = <$fh>)
	{
		chomp $line;
		my ($connection, $event, $rest) = split / /, $line, 3;
		push @events, [ $connection, $event, $rest // '' ];
	}
	close($fh);
	return @events;
}

# The full log text, for diagnostics.
sub log_text
{
	my ($self) = @_;
	return join('', map { "$_->[0] $_->[1] $_->[2]\n" } $self->events);
}

# The start LSNs (integers) of the START_REPLICATION commands received, in order.
sub start_lsns
{
	my ($self) = @_;
	return map { lsn((split / /, $_->[2])[1]) } grep { $_->[1] eq 'start_replication' } $self->events;
}

# The flush LSNs (integers) of the standby status updates received, in order.
sub flush_lsns
{
	my ($self) = @_;
	return map { $_->[2] =~ /flush=(\S+)/ ? lsn($1) : () } grep { $_->[1] eq 'status' } $self->events;
}

# The queries the fake did not know.
sub unknown_queries
{
	my ($self) = @_;
	return map { $_->[2] } grep { $_->[1] eq 'unknown_query' } $self->events;
}

# ---- the child's side --------------------------------------------------------------------------

# Appends one event to the log, in one write.
sub record
{
	my ($self, $connection, $event, $text) = @_;
	$text //= '';
	$text =~ s/\s+/ /g;
	open(my $fh, '>>', $self->{log}) or die "cannot append to $self->{log}: $!\n";
	syswrite($fh, "$connection $event $text\n");
	close($fh);
	return;
}

# The accept and I/O loop of the child: every connection has its own state and buffers.
sub serve
{
	my ($self, $listener) = @_;
	$SIG{TERM} = sub { POSIX::_exit(0) };
	$SIG{PIPE} = 'IGNORE';
	my $parent = $self->{parent};
	my $select = IO::Select->new($listener);
	my %connections;    # fileno => state
	my $next_id = 1;
	for (;;)
	{
		POSIX::_exit(0) if getppid() != $parent;    # the test process is gone
		my $writers = IO::Select->new(map { $_->{socket} } grep { length $_->{out} } values %connections);
		my ($readable, $writable) = IO::Select->select($select, $writers, undef, 0.1);
		for my $socket (@{ $readable // [] })
		{
			if ($socket == $listener)
			{
				my $client = $listener->accept or next;
				$client->blocking(0);
				$select->add($client);
				$connections{ fileno($client) } = {
					id => $next_id++, socket => $client, in => '', out => '', phase => 'startup' };
				next;
			}
			my $c = $connections{ fileno($socket) } or next;
			my $n = sysread($socket, my $data, 65536);
			if (!$n)
			{
				next if !defined $n && $!{EAGAIN};
				$self->close_connection($c, $select, \%connections);
				next;
			}
			$c->{in} .= $data;
			$self->handle_input($c);
		}
		for my $c (values %connections)
		{
			$self->pump($c) if $c->{phase} eq 'copy';
			if (length $c->{out})
			{
				my $n = syswrite($c->{socket}, $c->{out});
				substr($c->{out}, 0, $n, '') if defined $n;
			}
			$self->close_connection($c, $select, \%connections)
			  if $c->{phase} eq 'closing' && !length $c->{out};
		}
	}
}

sub close_connection
{
	my ($self, $c, $select, $connections) = @_;
	$self->record($c->{id}, 'close');
	$select->remove($c->{socket});
	delete $connections->{ fileno($c->{socket}) };
	close($c->{socket});
	return;
}

# Consumes the complete messages of a connection's input buffer.
sub handle_input
{
	my ($self, $c) = @_;
	for (;;)
	{
		return if $c->{phase} eq 'closing';
		if ($c->{phase} eq 'startup')
		{
			return if length($c->{in}) < 4;
			my $length = unpack('N', $c->{in});
			return if length($c->{in}) < $length;
			my $packet = substr($c->{in}, 0, $length, '');
			$self->handle_startup($c, substr($packet, 4));
			next;
		}
		return if length($c->{in}) < 5;
		my ($type, $length) = unpack('a N', $c->{in});
		return if length($c->{in}) < 1 + $length;
		my $message = substr($c->{in}, 0, 1 + $length, '');
		$self->handle_message($c, $type, substr($message, 5));
	}
}

# A message to the client: type byte, length, body.
sub message
{
	my ($type, $body) = @_;
	return $type . pack('N', 4 + length $body) . $body;
}

sub error_response
{
	my ($sqlstate, $text) = @_;
	return message('E', pack('(a Z*)*', S => 'ERROR', V => 'ERROR', C => $sqlstate, M => $text) . "\0");
}

sub ready
{
	return message('Z', 'I');
}

# The startup packet: answers SSL and GSSAPI encryption requests with 'N', then trusts the user.
sub handle_startup
{
	my ($self, $c, $packet) = @_;
	my $code = unpack('N', $packet);
	if ($code == $SSL_REQUEST || $code == $GSSENC_REQUEST)
	{
		$c->{out} .= 'N';
		return;
	}
	if ($code != $PROTOCOL_3)
	{
		$self->record($c->{id}, 'startup_rejected', $code == $CANCEL_REQUEST ? 'cancel request' : "code $code");
		$c->{phase} = 'closing';
		return;
	}
	my %params = split /\0/, substr($packet, 4);
	$self->record($c->{id}, 'startup', join(' ', map { "$_=$params{$_}" } sort keys %params));
	my @status = (
		server_version => '15.0',
		server_encoding => 'UTF8',
		client_encoding => $params{client_encoding} // 'UTF8',
		DateStyle => 'ISO, MDY',
		IntervalStyle => 'postgres',
		TimeZone => 'UTC',
		integer_datetimes => 'on',
		standard_conforming_strings => 'on',
		is_superuser => 'on',
		session_authorization => $params{user} // 'postgres',
		application_name => $params{application_name} // '',
		in_hot_standby => 'off');
	$c->{out} .= message('R', pack('N', 0));
	while (my ($name, $value) = splice(@status, 0, 2))
	{
		$c->{out} .= message('S', pack('Z* Z*', $name, $value));
	}
	$c->{out} .= message('K', pack('N N', 40000 + $c->{id}, 12345));
	$c->{out} .= ready();
	$c->{phase} = 'query';
	return;
}

# A whole result of text columns: RowDescription, DataRows (undef: NULL), CommandComplete.
sub rows
{
	my ($columns, @rows) = @_;
	my $description = pack('n', scalar @$columns);
	for my $column (@$columns)
	{
		my ($name, $type) = ref $column ? @$column : ($column, $TEXTOID);
		$description .= pack('Z* N s> N s> l> s>', $name, 0, 0, $type, $type == $INT4OID ? 4 : -1, -1, 0);
	}
	my $out = message('T', $description);
	for my $row (@rows)
	{
		$out .= message('D',
			pack('n', scalar @$row) . join('', map { defined $_ ? pack('N/a*', $_) : pack('l>', -1) } @$row));
	}
	return $out . message('C', pack('Z*', 'SELECT ' . scalar @rows));
}

# The string literals of a text (standard_conforming_strings).
sub literals
{
	my ($text) = @_;
	my @values;
	while ($text =~ /'((?:[^']|'')*)'/g)
	{
		(my $value = $1) =~ s/''/'/g;
		push @values, $value;
	}
	return @values;
}

# One frontend message in the query or copy phase.
sub handle_message
{
	my ($self, $c, $type, $body) = @_;
	if ($type eq 'X')
	{
		$c->{phase} = 'closing';
		return;
	}
	if ($type eq 'd' && $c->{phase} eq 'copy')
	{
		$self->handle_copy_data($c, $body);
		return;
	}
	if ($type eq 'c' && $c->{phase} eq 'copy')
	{
		$self->record($c->{id}, 'copy_done');
		$c->{out} .= message('c', '') . message('C', pack('Z*', 'START_REPLICATION')) . ready();
		$c->{phase} = 'query';
		return;
	}
	if ($type ne 'Q' || $c->{phase} ne 'query')
	{
		$self->record($c->{id}, 'unexpected_message', "type $type in phase $c->{phase}");
		$c->{out} .= error_response('08P01', "fake walsender: unexpected message type $type");
		$c->{phase} = 'closing';
		return;
	}
	(my $query = unpack('Z*', $body)) =~ s/^\s+|\s+$//g;
	$self->record($c->{id}, 'query', $query);
	$c->{out} .= $self->answer($c, $query);
	return;
}

# The response to a simple query, ReadyForQuery included (except for START_REPLICATION).
sub answer
{
	my ($self, $c, $query) = @_;
	if ($query =~ /^IDENTIFY_SYSTEM\s*;?$/i)
	{
		return rows([ 'systemid', [ 'timeline', $INT4OID ], 'xlogpos', 'dbname' ],
			[ $self->{systemid}, $self->{timeline}, lsn_text($self->{xlogpos}), $self->{dbname} ])
		  . ready();
	}
	if ($query =~ m{^START_REPLICATION\s+SLOT\s+("(?:[^"]|"")*"|\S+)\s+LOGICAL\s+([0-9A-Fa-f]+/[0-9A-Fa-f]+)}i)
	{
		my ($slot, $start) = ($1, lsn($2));
		$self->record($c->{id}, 'start_replication', "$slot " . lsn_text($start));
		$c->{phase} = 'copy';
		$c->{start} = $start;
		$c->{step} = 0;
		$c->{flushed} = 0;
		$c->{sent_end} = $start;
		$c->{last_send} = Time::HiRes::time();
		return message('W', pack('C n', 0, 0));
	}
	if ($query =~ /^CREATE_REPLICATION_SLOT\s+("(?:[^"]|"")*"|\S+)/i)
	{
		(my $slot = $1) =~ s/^"|"$//g;
		return rows([ 'slot_name', 'consistent_point', 'snapshot_name', 'output_plugin' ],
			[ $slot, lsn_text($self->{xlogpos}), undef, 'pgoutput' ]) . ready();
	}
	if ($query =~ /^DROP_REPLICATION_SLOT\b/i)
	{
		return message('C', pack('Z*', 'DROP_REPLICATION_SLOT')) . ready();
	}
	if ($query =~ /^SET\s/i)
	{
		return message('C', pack('Z*', 'SET')) . ready();
	}
	if ($query =~ /^SELECT\s+pg_catalog\.set_config\s*\(/i)
	{
		my @arguments = literals($query);
		return rows(['set_config'], [ $arguments[1] // '' ]) . ready();
	}
	if ($query =~ /^SELECT\s+coalesce\(wal_status\b.*\bpg_catalog\.pg_replication_slots\b/i)
	{
		my @found = defined $self->{slot_plugin} ? ([ 'reserved', '-1' ]) : ();
		return rows([ 'wal_status', 'safe_wal_size' ], @found) . ready();
	}
	if ($query =~ /^SELECT\s+plugin\s+FROM\s+pg_catalog\.pg_replication_slots\b/i)
	{
		my @found = defined $self->{slot_plugin} ? ([ $self->{slot_plugin} ]) : ();
		return rows(['plugin'], @found) . ready();
	}
	if ($query =~ /\bpg_catalog\.pg_publication\b/ && $query =~ /ARRAY\[(.*?)\]/)
	{
		my %exists = map { $_ => 1 } @{ $self->{publications} };
		return rows(['name'], map { [$_] } grep { !$exists{$_} } literals($1)) . ready();
	}
	$self->record($c->{id}, 'unknown_query', $query);
	return error_response('42601', "fake walsender does not know this query") . ready();
}

# A CopyData message from the client in the stream: standby status updates are recorded.
sub handle_copy_data
{
	my ($self, $c, $data) = @_;
	my $kind = substr($data, 0, 1);
	if ($kind eq 'r' && length($data) >= 34)
	{
		my ($write, $flush, $apply, $time, $reply) = unpack('x Q> Q> Q> q> C', $data);
		$c->{flushed} = $flush if $flush > $c->{flushed};
		$self->record($c->{id}, 'status',
			sprintf('write=%s flush=%s apply=%s reply=%d', lsn_text($write), lsn_text($flush),
				lsn_text($apply), $reply));
		return;
	}
	$self->record($c->{id}, 'copy_data', "kind $kind, " . length($data) . ' bytes');
	return;
}

# Sends the script's steps from where the connection is, until a wait or the end; then a keepalive
# every keepalive_interval seconds.
sub pump
{
	my ($self, $c) = @_;
	my $script = $self->{script};
	while ($c->{step} < @$script)
	{
		my $step = $script->[ $c->{step} ];
		if ($step->{type} eq 'wait_flush')
		{
			if ($c->{start} >= $step->{lsn})
			{
				$c->{step}++;
				next;
			}
			$c->{wait_until} //= Time::HiRes::time() + $step->{timeout};
			my $reached = $c->{flushed} >= $step->{lsn};
			return unless $reached || Time::HiRes::time() >= $c->{wait_until};
			$self->record($c->{id}, 'wait_flush', lsn_text($step->{lsn}) . ($reached ? ' reached' : ' timed_out'));
			delete $c->{wait_until};
			$c->{step}++;
			next;
		}
		$c->{step}++;
		# A walsender starting at an LSN sends no transaction that committed before it.
		next if defined $step->{commit_lsn} && $step->{commit_lsn} < $c->{start};
		if ($step->{type} eq 'keepalive')
		{
			$self->send_keepalive($c, $step->{wal_end}, $step->{reply});
			next;
		}
		my $xlogdata = pack('a Q> Q> q>', 'w', $step->{wal_start}, $step->{wal_end}, pg_now()) . $step->{payload};
		$c->{out} .= message('d', $xlogdata);
		$c->{sent_end} = $step->{wal_end} if $step->{wal_end} > $c->{sent_end};
		$c->{last_send} = Time::HiRes::time();
	}
	$self->send_keepalive($c, $c->{sent_end}, 0)
	  if Time::HiRes::time() - $c->{last_send} >= $self->{keepalive_interval};
	return;
}

sub send_keepalive
{
	my ($self, $c, $wal_end, $reply) = @_;
	$c->{out} .= message('d', pack('a Q> q> C', 'k', $wal_end, pg_now(), $reply));
	$c->{sent_end} = $wal_end if $wal_end > $c->{sent_end};
	$c->{last_send} = Time::HiRes::time();
	return;
}

1;
