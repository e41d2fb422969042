// Spool files of streamed and prepared transactions: pg_logical_audit/<subscription id>-<xid>.stream
// under the data directory, a sequence of records (message size: 4 bytes, its top bit set for a
// message sent outside a stream block; WAL start: 8 bytes; the pgoutput message as received).
// Stream files need no fsync: after a crash the upstream streams every uncommitted transaction
// again from its first segment. A prepared transaction's file is made durable and renamed to
// <subscription id>-<xid>.prepared before its PREPARE is confirmed: the upstream sends only its
// COMMIT PREPARED or ROLLBACK PREPARED after that.
//
// Each transaction keeps, in memory, the offset where each of its subtransactions wrote first: an
// aborted subtransaction's changes, and those of the subtransactions nested in it, all follow that
// offset (the upstream streams a transaction's changes in WAL order), so the file is cut there.
#include "audit/spool.hpp"
#include "recovery.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

namespace po = pgoutput;

constexpr const char *kDirectory = "pg_logical_audit";
constexpr size_t kBufferSize = 64 * 1024;
constexpr size_t kHeaderSize = 12;
constexpr uint32 kOutsideStream = 0x80000000; // in a record's size: the message came outside a stream block
constexpr const char *kStreamSuffix = "stream";
constexpr const char *kPreparedSuffix = "prepared";

// Where a subtransaction's first message starts in its transaction's file.
struct SubxactStart {
	po::Xid xid;
	off_t offset;
};

// A streamed transaction not yet committed or aborted.
struct StreamedTxn {
	po::Xid xid;
	SubxactStart *subxacts; // in the order they first wrote
	int nsubxacts;
	int capacity;
	Oid *described; // relations whose shape the file carries (see spool_describe)
	int ndescribed;
	int described_capacity;
};

} // namespace

struct Spool {
	int subscription_id;
	MemoryContext context;
	StreamedTxn *txns;
	int ntxns;
	int capacity;
	int fd;            // the file being appended to or read, or -1
	StreamedTxn *open; // the transaction being appended to, or nullptr
	off_t offset;      // end of the appended file, buffered bytes included
	char *buffer;      // write buffer, or read buffer when replaying
	size_t buffered;   // bytes in the buffer
	size_t read_pos;   // next byte to read from the buffer
};

namespace {

// The path of a subscription's stream or prepared spool file of a transaction.
void file_path(int subscription_id, po::Xid xid, bool prepared, char (&path)[MAXPGPATH]) {
	snprintf(path, MAXPGPATH, "%s/%d-%u.%s", kDirectory, subscription_id, xid,
	         prepared ? kPreparedSuffix : kStreamSuffix);
}

// The path of a transaction's stream or prepared spool file.
void spool_path(const Spool *s, po::Xid xid, char (&path)[MAXPGPATH], bool prepared = false) {
	file_path(s->subscription_id, xid, prepared, path);
}

// Creates the spool directory when it does not exist yet.
void make_directory() {
	if (MakePGDirectory(kDirectory) < 0 && errno != EEXIST)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not create directory \"%s\": %m", kDirectory)));
}

// Opens a spool file; ERROR when it cannot.
int open_file(const char *path, int flags) {
	int fd = BasicOpenFile(path, flags | PG_BINARY);
	if (fd < 0)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not open spool file \"%s\": %m", path)));
	return fd;
}

// Removes a file; one that is already gone is fine. A failure is reported at elevel.
void remove_file(const char *path, int elevel = ERROR) {
	if (unlink(path) < 0 && errno != ENOENT)
		ereport(elevel, (errcode_for_file_access(), errmsg("could not remove spool file \"%s\": %m", path)));
}

// Writes all bytes to the open file.
void write_all(Spool *s, const char *data, size_t size) {
	while (size > 0) {
		ssize_t written = write(s->fd, data, size);
		if (written < 0 && errno == EINTR)
			continue;
		if (written <= 0) {
			if (written == 0)
				errno = ENOSPC;
			ereport(ERROR,
			        (errcode_for_file_access(), errmsg("could not write to a spool file in \"%s\": %m", kDirectory),
			         errhint("Check free disk space in the data directory.")));
		}
		data += written;
		size -= written;
	}
}

// Writes the buffered bytes to the open file.
void flush_buffer(Spool *s) {
	write_all(s, s->buffer, s->buffered);
	s->buffered = 0;
}

// Appends bytes through the buffer; a message larger than the buffer goes straight to the file.
void append(Spool *s, const void *data, size_t size) {
	if (s->buffered + size > kBufferSize)
		flush_buffer(s);
	if (size > kBufferSize)
		write_all(s, static_cast<const char *>(data), size);
	else {
		memcpy(s->buffer + s->buffered, data, size);
		s->buffered += size;
	}
	s->offset += size;
}

// Reads exactly size bytes from the file being replayed; false at a clean end of file (no byte).
bool read_exact(Spool *s, void *dst, size_t size) {
	char *out = static_cast<char *>(dst);
	size_t done = 0;
	while (done < size) {
		if (s->read_pos == s->buffered) {
			ssize_t got = read(s->fd, s->buffer, kBufferSize);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				ereport(ERROR,
				        (errcode_for_file_access(), errmsg("could not read a spool file in \"%s\": %m", kDirectory)));
			if (got == 0) {
				if (done == 0)
					return false;
				ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
				                errmsg("spool file in \"%s\" ends inside a record", kDirectory)));
			}
			s->buffered = got;
			s->read_pos = 0;
		}
		size_t n = Min(size - done, s->buffered - s->read_pos);
		memcpy(out + done, s->buffer + s->read_pos, n);
		s->read_pos += n;
		done += n;
	}
	return true;
}

// The transaction's entry, or nullptr.
StreamedTxn *find_txn(const Spool *s, po::Xid xid) {
	for (int i = 0; i < s->ntxns; i++)
		if (s->txns[i].xid == xid)
			return &s->txns[i];
	return nullptr;
}

// A new entry for a transaction.
StreamedTxn *add_txn(Spool *s, po::Xid xid) {
	if (s->ntxns == s->capacity) {
		s->capacity *= 2;
		s->txns = static_cast<StreamedTxn *>(repalloc(s->txns, sizeof(StreamedTxn) * s->capacity));
	}
	StreamedTxn *t = &s->txns[s->ntxns++];
	*t = {xid, nullptr, 0, 0, nullptr, 0, 0};
	return t;
}

// Forgets a transaction's entry.
void forget_txn(Spool *s, StreamedTxn *t) {
	if (t->subxacts != nullptr)
		pfree(t->subxacts);
	if (t->described != nullptr)
		pfree(t->described);
	*t = s->txns[--s->ntxns];
}

// The array, in context (or where it is already), with room for one more element than used.
template <typename T>
T *grown(MemoryContext context, T *array, int used, int *capacity) {
	if (used < *capacity)
		return array;
	*capacity = Max(8, *capacity * 2);
	size_t bytes = sizeof(T) * *capacity;
	return static_cast<T *>(array == nullptr ? MemoryContextAlloc(context, bytes) : repalloc(array, bytes));
}

// Notes where a subtransaction writes first; its later messages need nothing.
void note_subxact(Spool *s, StreamedTxn *t, po::Xid xid) {
	if (xid == t->xid || (t->nsubxacts > 0 && t->subxacts[t->nsubxacts - 1].xid == xid))
		return;
	for (int i = 0; i < t->nsubxacts; i++)
		if (t->subxacts[i].xid == xid)
			return;
	t->subxacts = grown(s->context, t->subxacts, t->nsubxacts, &t->capacity);
	t->subxacts[t->nsubxacts++] = {xid, s->offset};
}

// Which of a subscription's files a directory scan takes.
enum class Files { Stream, Prepared, All };

// A spool file found by a scan.
struct SpoolFile {
	po::Xid xid;
	bool prepared;
};

// Whether a directory entry is a spool file of the subscription that a scan takes; fills *file.
bool spool_file(int subscription_id, const char *name, Files files, SpoolFile *file) {
	int id;
	unsigned xid;
	char suffix[16];
	int consumed = 0;
	if (sscanf(name, "%d-%u.%15[a-z]%n", &id, &xid, suffix, &consumed) != 3 || name[consumed] != '\0' ||
	    id != subscription_id)
		return false;
	file->xid = xid;
	file->prepared = strcmp(suffix, kPreparedSuffix) == 0;
	if (!file->prepared && strcmp(suffix, kStreamSuffix) != 0)
		return false;
	return files == Files::All || file->prepared == (files == Files::Prepared);
}

// The subscription's spool files a scan takes, in the current context. The directory is read with
// opendir, not AllocateDir: the worker also scans it outside any transaction, where an ERROR would
// leak what AllocateDir registered. A directory that cannot be read is reported at elevel.
SpoolFile *scan_files(int subscription_id, Files files, int elevel, int *count) {
	*count = 0;
	DIR *dir = opendir(kDirectory);
	if (dir == nullptr) {
		if (errno != ENOENT)
			ereport(elevel, (errcode_for_file_access(), errmsg("could not open directory \"%s\": %m", kDirectory)));
		return nullptr;
	}
	SpoolFile *found = nullptr;
	int capacity = 0;
	SpoolFile file;
	while (struct dirent *entry = readdir(dir))
		if (spool_file(subscription_id, entry->d_name, files, &file)) {
			found = grown(CurrentMemoryContext, found, *count, &capacity);
			found[(*count)++] = file;
		}
	closedir(dir);
	return found;
}

// Removes the subscription's files that a scan takes and keep does not have in progress. A failure
// is reported at elevel: ERROR stops there, LOG (where no error may be raised) goes on.
void remove_files(int subscription_id, Files files, int elevel, const Spool *keep = nullptr) {
	int count;
	SpoolFile *found = scan_files(subscription_id, files, elevel, &count);
	for (int i = 0; i < count; i++) {
		if (keep != nullptr && find_txn(keep, found[i].xid) != nullptr)
			continue;
		char path[MAXPGPATH];
		file_path(subscription_id, found[i].xid, found[i].prepared, path);
		remove_file(path, elevel);
	}
	if (found != nullptr)
		pfree(found);
}

} // namespace

Spool *spool_create(int subscription_id, MemoryContext context) {
	Spool *s = static_cast<Spool *>(MemoryContextAllocZero(context, sizeof(Spool)));
	s->subscription_id = subscription_id;
	s->context = context;
	s->capacity = 4;
	s->txns = static_cast<StreamedTxn *>(MemoryContextAlloc(context, sizeof(StreamedTxn) * s->capacity));
	s->buffer = static_cast<char *>(MemoryContextAlloc(context, kBufferSize));
	s->fd = -1;
	on_error_cleanup([](void *spool) { spool_close_files(static_cast<Spool *>(spool)); }, s);
	return s;
}

void spool_remove_all(Spool *s) {
	spool_close_files(s);
	while (s->ntxns > 0)
		forget_txn(s, &s->txns[0]);
	make_directory();
	remove_files(s->subscription_id, Files::Stream, ERROR);
}

void spool_open(Spool *s, po::Xid xid, bool first_segment) {
	StreamedTxn *t = find_txn(s, xid);
	if (t == nullptr && !first_segment)
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
		                errmsg("stream start of transaction %u continues a transaction that was never started", xid),
		                errdetail("Its first segment did not arrive in this session.")));
	if (t == nullptr)
		t = add_txn(s, xid);
	if (first_segment)
		t->nsubxacts = t->ndescribed = 0;
	char path[MAXPGPATH];
	spool_path(s, xid, path);
	s->fd = open_file(path, O_WRONLY | O_CREAT | (first_segment ? O_TRUNC : O_APPEND));
	s->offset = first_segment ? 0 : lseek(s->fd, 0, SEEK_END);
	if (s->offset < 0)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not seek in spool file \"%s\": %m", path)));
	s->buffered = 0;
	s->open = t;
}

void spool_write(Spool *s, po::Xid xid, XLogRecPtr lsn, const uint8_t *data, size_t size, bool in_stream) {
	Assert(s->open != nullptr);
	if (size >= kOutsideStream)
		ereport(ERROR,
		        (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("streamed message of %zu bytes is too large", size)));
	note_subxact(s, s->open, xid);
	uint8_t header[kHeaderSize];
	uint32 size32 = static_cast<uint32>(size) | (in_stream ? 0 : kOutsideStream);
	uint64 lsn64 = lsn;
	memcpy(header, &size32, sizeof size32);
	memcpy(header + sizeof size32, &lsn64, sizeof lsn64);
	append(s, header, kHeaderSize);
	append(s, data, size);
}

bool spool_describe(Spool *s, Oid relation_id) {
	Assert(s->open != nullptr);
	StreamedTxn *t = s->open;
	for (int i = 0; i < t->ndescribed; i++)
		if (t->described[i] == relation_id)
			return false;
	t->described = grown(s->context, t->described, t->ndescribed, &t->described_capacity);
	t->described[t->ndescribed++] = relation_id;
	return true;
}

void spool_close(Spool *s) {
	if (s->open == nullptr)
		return;
	flush_buffer(s);
	close(s->fd);
	s->fd = -1;
	s->open = nullptr;
}

bool spool_any(const Spool *s) {
	return s->ntxns > 0;
}

void spool_abort(Spool *s, po::Xid xid, po::Xid subxid) {
	StreamedTxn *t = find_txn(s, xid);
	if (t == nullptr)
		return; // nothing of it was streamed in this session
	char path[MAXPGPATH];
	spool_path(s, xid, path);
	if (subxid == xid) {
		remove_file(path);
		forget_txn(s, t);
		return;
	}
	for (int i = 0; i < t->nsubxacts; i++) {
		if (t->subxacts[i].xid != subxid)
			continue;
		if (truncate(path, t->subxacts[i].offset) < 0)
			ereport(ERROR, (errcode_for_file_access(), errmsg("could not truncate spool file \"%s\": %m", path)));
		t->nsubxacts = i;
		return;
	}
}

bool spool_replay_start(Spool *s, po::Xid xid, bool prepared) {
	char path[MAXPGPATH];
	spool_path(s, xid, path, prepared);
	if (!prepared && find_txn(s, xid) == nullptr)
		return false;
	s->fd = BasicOpenFile(path, O_RDONLY | PG_BINARY);
	if (s->fd < 0 && errno == ENOENT)
		return false;
	if (s->fd < 0)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not open spool file \"%s\": %m", path)));
	s->buffered = 0;
	s->read_pos = 0;
	return true;
}

bool spool_replay_next(Spool *s, XLogRecPtr *lsn, const uint8_t **data, size_t *size, bool *in_stream) {
	uint8_t header[kHeaderSize];
	if (!read_exact(s, header, kHeaderSize))
		return false;
	uint32 size32;
	uint64 lsn64;
	memcpy(&size32, header, sizeof size32);
	memcpy(&lsn64, header + sizeof size32, sizeof lsn64);
	*in_stream = (size32 & kOutsideStream) == 0;
	size32 &= ~kOutsideStream;
	uint8_t *message = static_cast<uint8_t *>(palloc_extended(Max(size32, 1), MCXT_ALLOC_HUGE));
	if (!read_exact(s, message, size32) && size32 > 0)
		ereport(ERROR,
		        (errcode(ERRCODE_DATA_CORRUPTED), errmsg("spool file in \"%s\" ends inside a record", kDirectory)));
	*lsn = lsn64;
	*data = message;
	*size = size32;
	return true;
}

void spool_prepare(Spool *s, po::Xid xid) {
	Assert(s->open != nullptr && s->open->xid == xid);
	flush_buffer(s);
	char path[MAXPGPATH];
	char prepared[MAXPGPATH];
	spool_path(s, xid, path);
	spool_path(s, xid, prepared, true);
	if (pg_fsync(s->fd) != 0)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not fsync spool file \"%s\": %m", path)));
	spool_close_files(s);
	durable_rename(path, prepared, ERROR);
	forget_txn(s, find_txn(s, xid));
}

void spool_remove(Spool *s, po::Xid xid, bool prepared) {
	spool_close_files(s);
	char path[MAXPGPATH];
	spool_path(s, xid, path, prepared);
	remove_file(path);
	StreamedTxn *t = find_txn(s, xid);
	if (t != nullptr)
		forget_txn(s, t);
}

namespace {

// The subscriptions whose files go when the current transaction commits (TopMemoryContext).
int *dropped = nullptr;
int ndropped = 0;
int dropped_capacity = 0;
bool callback_registered = false;

// At the end of a transaction: removes the dropped subscriptions' files if it committed.
void remove_dropped(XactEvent event, void *) {
	if (event == XACT_EVENT_COMMIT)
		for (int i = 0; i < ndropped; i++)
			remove_files(dropped[i], Files::All, LOG);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
	    event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		ndropped = 0;
}

} // namespace

void spool_remove_subscription_at_commit(int subscription_id) {
	if (!callback_registered)
		RegisterXactCallback(remove_dropped, nullptr);
	callback_registered = true;
	dropped = grown(TopMemoryContext, dropped, ndropped, &dropped_capacity);
	dropped[ndropped++] = subscription_id;
}

bool spool_files_exist(int subscription_id) {
	int count;
	SpoolFile *found = scan_files(subscription_id, Files::All, ERROR, &count);
	if (found != nullptr)
		pfree(found);
	return count > 0;
}

po::Xid *spool_prepared_xids(Spool *s, int *count) {
	SpoolFile *found = scan_files(s->subscription_id, Files::Prepared, ERROR, count);
	auto *xids = static_cast<po::Xid *>(palloc(sizeof(po::Xid) * Max(*count, 1)));
	for (int i = 0; i < *count; i++)
		xids[i] = found[i].xid;
	if (found != nullptr)
		pfree(found);
	return xids;
}

void spool_sweep(Spool *s) {
	remove_files(s->subscription_id, Files::Stream, ERROR, s);
}

void spool_close_files(Spool *s) {
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->open = nullptr;
	s->buffered = 0;
	s->read_pos = 0;
}

} // namespace logical_audit::audit
